"""Model providers: `hf` (transformers in-process) and `litellm` (APIs and OpenAI-compatible servers).

Both modules are light to import: torch, transformers and litellm load on first use.
"""

from __future__ import annotations

from engine.config.schema import ModelConfig
from engine.models.hf import HFProvider, resolve_model_dir
from engine.models.litellm_provider import LiteLLMProvider
from engine.models.tool_caller import with_tool_model
from engine.types import Provider


def build_provider(cfg: ModelConfig) -> Provider:
    if cfg.provider == "hf":
        return HFProvider(with_tool_model(cfg))  # model=smollm2_tools: the trained checkpoint
    return LiteLLMProvider(cfg, lean=None if cfg.client == "auto" else cfg.client == "lean")


__all__ = ["HFProvider", "LiteLLMProvider", "build_provider", "resolve_model_dir", "with_tool_model"]
