"""Loglikelihoods through an OpenAI-compatible server that echoes prompt logprobs (vLLM's
`echo=true, logprobs=1, max_tokens=0`): `model=litellm model.supports_prompt_logprobs=true`.

No vLLM runs on this CPU machine, so the server is evalbench's own model gateway
(engine/external/gateway.py) over the real SmolLM2, which answers echo requests as vLLM does
(prompt tokens, their logprobs, text offsets). The path must give the in-process loglikelihoods,
and a server whose logprob lists are broken must give a typed, retried error, never a number.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from engine.config.schema import HarnessConfig, ModelConfig
from engine.models import litellm_provider
from engine.models.litellm_provider import LiteLLMProvider
from engine.types import LoglikelihoodRequest, ProviderError

REQUESTS = [
    LoglikelihoodRequest(context="Question: What is the capital of France?\nAnswer:",
                         continuations=(" Paris", " Lyon", " the city of Marseille, on the coast")),
    LoglikelihoodRequest(context="The following are multiple choice questions.\n\nQ: 2+2=\nA. 3\nB. 4\nAnswer:",
                         continuations=(" A", " B"), unconditional_context="Answer:"),
]


def _echo_provider(base: str) -> LiteLLMProvider:
    return LiteLLMProvider(ModelConfig(provider="litellm", name="openai/smollm2", api_base=base,
                                       supports_prompt_logprobs=True, timeout_s=300))


@pytest.mark.slow
def test_echo_logprobs_from_a_server_equal_the_in_process_model(smollm2_provider):
    from engine.external.gateway import ModelGateway
    from engine.runner.cache import ResultCache
    from engine.runner.core import RunnerCore

    async def through_server() -> list:
        core = RunnerCore(smollm2_provider, HarnessConfig(concurrency=4), ResultCache(None), progress=False)
        async with ModelGateway(core) as gateway:
            provider = _echo_provider(gateway.base_url)
            try:
                return await provider.loglikelihood(REQUESTS)
            finally:
                await provider.aclose()

    served = asyncio.run(through_server())
    local = smollm2_provider.loglikelihood_sync(REQUESTS)
    for s, loc in zip(served, local, strict=True):
        assert s.logprobs == pytest.approx(loc.logprobs, abs=1e-4)
        assert s.token_counts == loc.token_counts and s.is_greedy == loc.is_greedy
        if loc.unconditional_logprobs is not None:
            assert s.unconditional_logprobs == pytest.approx(loc.unconditional_logprobs, abs=1e-4)
    assert served[0].logprobs[0] > served[0].logprobs[1]  # the numbers are a model's, not zeros


@pytest.mark.parametrize("logprobs", [
    {"text_offset": [0, 9, 15], "token_logprobs": [None, -1.0, None], "top_logprobs": [None, {"x": -1.0}, None]},
    {"text_offset": [0, 9, 15], "token_logprobs": [None, -1.0], "top_logprobs": []},  # shorter than its offsets
    {"text_offset": [0, 9, 15], "token_logprobs": [None, -1.0, "a lot"], "top_logprobs": []},
], ids=["null", "short", "text"])
def test_a_server_with_broken_prompt_logprobs_is_a_typed_error_never_a_number(monkeypatch, logprobs):
    resp = SimpleNamespace(choices=[SimpleNamespace(logprobs=SimpleNamespace(**logprobs))])

    async def atext_completion(**_: object) -> SimpleNamespace:
        return resp

    monkeypatch.setattr(litellm_provider, "_litellm", lambda: SimpleNamespace(atext_completion=atext_completion))
    provider = _echo_provider("http://127.0.0.1:9/v1")
    with pytest.raises(ProviderError) as err:
        asyncio.run(provider.loglikelihood([LoglikelihoodRequest(context="Question: x", continuations=(" yes",))]))
    assert (err.value.kind, err.value.transient) == ("malformed_response", True), str(err.value)
