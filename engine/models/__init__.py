"""Model providers: `hf` (transformers in-process) and `litellm` (APIs and OpenAI-compatible servers)."""

from __future__ import annotations

from engine.api import Provider
from engine.config.schema import ModelConfig


def build_provider(cfg: ModelConfig) -> Provider:
    # Each provider module imports its heavy library (torch / litellm) only when it is chosen.
    if cfg.provider == "hf":
        from engine.models.hf import HFProvider

        return HFProvider(cfg)
    from engine.models.litellm_provider import LiteLLMProvider

    return LiteLLMProvider(cfg)


__all__ = ["build_provider"]
