"""Both API paths of the litellm provider (the lean OpenAI-compatible client and litellm itself) send
the same sampling fields for the same request (engine/models/openai_compat.py `sampling_fields`), so
a run's answers do not depend on which path served it (docs/architecture.md, "The lean
OpenAI-compatible path"). Fast: nothing is sent; litellm's entry point is replaced by a recorder."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.config.schema import ModelConfig
from engine.models import litellm_provider
from engine.models.litellm_provider import LiteLLMProvider
from engine.types import ChatMessage, GenerateRequest, ProviderError, SamplingParams

SAMPLING = [
    SamplingParams(max_tokens=7, temperature=0.5, top_p=0.9, stop=("\n", "Q:"), seed=3),
    SamplingParams(max_tokens=64),  # no stop, no seed: neither field is sent
]
FIELDS = ("max_tokens", "temperature", "top_p", "stop", "seed")


class _Recorder:
    """Stands in for the litellm module: records the call's arguments, then fails it."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    async def acompletion(self, **kwargs: Any) -> Any:
        self.kwargs = kwargs
        raise RuntimeError("recorded")

    atext_completion = acompletion


def _cfg() -> ModelConfig:
    return ModelConfig(provider="litellm", name="openai/any", api_base="http://127.0.0.1:9/v1")


@pytest.mark.parametrize("sampling", SAMPLING, ids=["all", "defaults"])
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_the_lean_client_and_litellm_send_the_same_sampling_fields(monkeypatch, sampling, chat):
    request = GenerateRequest(sampling=sampling, **(
        {"messages": (ChatMessage(role="user", content="2+3?"),)} if chat else {"prompt": "2+3="}))
    lean = LiteLLMProvider(_cfg(), lean=True).lean
    assert lean is not None
    _, body = lean.body(request)

    recorder = _Recorder()
    monkeypatch.setattr(litellm_provider, "_litellm", lambda: recorder)
    with pytest.raises(ProviderError):
        asyncio.run(LiteLLMProvider(_cfg(), lean=False).generate([request]))

    sent_lean = {k: body[k] for k in FIELDS if k in body}
    sent_litellm = {k: recorder.kwargs[k] for k in FIELDS if k in recorder.kwargs}
    assert sent_lean == sent_litellm
    assert sent_lean["max_tokens"] == sampling.max_tokens and sent_lean["top_p"] == sampling.top_p
    assert ("stop" in sent_lean) == bool(sampling.stop) and ("seed" in sent_lean) == (sampling.seed is not None)
