"""Model providers: `hf` (transformers in-process) and `litellm` (APIs and OpenAI-compatible servers)."""

from __future__ import annotations

from typing import Protocol

from engine.config.schema import ModelConfig
from engine.models.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    ProviderError,
)
from engine.record.schema import ModelIdentity


class Provider(Protocol):
    identity: ModelIdentity
    max_batch: int

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateResponse]: ...

    async def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]: ...

    async def aclose(self) -> None: ...


def build_provider(cfg: ModelConfig) -> Provider:
    if cfg.provider == "hf":
        from engine.models.hf import HFProvider

        return HFProvider(cfg)
    from engine.models.litellm_provider import LiteLLMProvider

    return LiteLLMProvider(cfg)


__all__ = ["Provider", "ProviderError", "build_provider"]
