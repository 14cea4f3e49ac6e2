"""The model gateway and `RunnerCore.submit`: every request through the core (cache, one concurrency
limit, retries, micro-batching), OpenAI-compatible answers (docs/architecture.md, "External evals")."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from conftest import FakeProvider, token_logprob

from engine.external.gateway import ModelGateway
from engine.runner.cache import cache_key
from engine.runner.work import WorkItem
from engine.types import GenerateRequest, SamplingParams, TokenLogprobsRequest


def _item(core, request) -> WorkItem:
    return WorkItem(key=cache_key(core.provider.identity, request, "gateway", [], 0), request=request)


def test_submit_caches_and_a_new_core_on_the_same_cache_calls_no_model(make_core) -> None:
    core = make_core()
    req = TokenLogprobsRequest(tokens=(1, 2, 3))

    async def go(c):
        return await c.submit(_item(c, req))

    first = asyncio.run(go(core))
    again = asyncio.run(go(core))
    assert not first.cached and first.error is None and again.cached
    assert core.provider.batches == [1]
    fresh = make_core(FakeProvider())
    out = asyncio.run(go(fresh))
    assert out.cached and fresh.model_calls == 0 and fresh.provider.batches == []
    assert out.response == first.response


def test_concurrent_submissions_are_micro_batched_and_share_one_limit(make_core) -> None:
    provider = FakeProvider(max_batch=4, delay_s=0.05)
    core = make_core(provider, concurrency=1)

    async def go():
        reqs = [TokenLogprobsRequest(tokens=(i, i + 1)) for i in range(10)]
        return await asyncio.gather(*(core.submit(_item(core, r)) for r in reqs))

    outs = asyncio.run(go())
    assert all(o.error is None and o.response is not None for o in outs)
    assert sorted(provider.batches, reverse=True) == [4, 4, 2]  # 10 submissions, 3 provider calls
    assert provider.max_active == 1  # harness.concurrency=1 holds across submissions


def test_submit_retries_transient_errors_and_dedupes_one_key(make_core) -> None:
    provider = FakeProvider(fail_first=1)
    core = make_core(provider)
    req = GenerateRequest(prompt="hi", sampling=SamplingParams(max_tokens=4))

    async def go():
        return await asyncio.gather(core.submit(_item(core, req)), core.submit(_item(core, req)))

    a, b = asyncio.run(go())
    assert a.error is None and a.attempts == 2 and a.response == b.response
    assert provider.batches == [1]


def test_a_provider_without_prompt_logprobs_is_an_error_not_a_hang(make_core) -> None:
    class NoEcho(FakeProvider):
        token_logprobs = None  # type: ignore[assignment]

    core = make_core(NoEcho())
    out = asyncio.run(core.submit(_item(core, TokenLogprobsRequest(tokens=(1, 2)))))
    assert out.error is not None and out.error.kind == "unsupported"


async def _post(session, url, body):
    async with session.post(url, json=body) as r:
        return r.status, await r.json()


def test_gateway_serves_openai_endpoints_through_the_core(make_core) -> None:
    core = make_core()

    async def go():
        async with ModelGateway(core) as gw, aiohttp.ClientSession() as s:
            async with s.get(gw.base_url + "/models") as r:
                models = await r.json()
            ctx, cont = [5, 9, 4], [7, 1]
            # lm-eval local-completions, loglikelihood: token ids, echo, logprobs=1, max_tokens=1
            body = {"model": "fake-model", "prompt": [ctx + cont, [3, 3]], "temperature": 0, "max_tokens": 1,
                    "logprobs": 1, "seed": 1234, "echo": True}
            status_ll, ll = await _post(s, gw.base_url + "/completions", body)
            status_zero, zero = await _post(s, gw.base_url + "/completions", {**body, "max_tokens": 0})
            status_gen, gen = await _post(s, gw.base_url + "/completions", {"prompt": "Hello", "max_tokens": 5})
            status_chat, chat = await _post(s, gw.base_url + "/chat/completions",
                                            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
            status_bad, bad = await _post(s, gw.base_url + "/completions", {"prompt": 3})
            status_stream, _ = await _post(s, gw.base_url + "/chat/completions",
                                           {"messages": [{"role": "user", "content": "Hi"}], "stream": True})
            return (models, status_ll, ll, status_zero, zero, status_gen, gen, status_chat, chat, status_bad, bad,
                    status_stream, list(gw.served))

    (models, status_ll, ll, status_zero, zero, status_gen, gen, status_chat, chat, status_bad, bad, status_stream,
     served) = asyncio.run(go())
    assert models["data"][0]["id"] == "fake-model"
    assert status_ll == 200 and [c["index"] for c in ll["choices"]] == [0, 1]
    lp = ll["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == 5 + 1 and lp["token_logprobs"][0] is None  # prompt + the one generated token
    # What lm-eval computes (openai_completions.parse_logprobs): sum(token_logprobs[ctxlen:-1]).
    ctxlen, toks = 3, [5, 9, 4, 7, 1]
    expected = sum(token_logprob(p, t) for p, t in zip(toks[ctxlen - 1 :], toks[ctxlen:], strict=False))
    assert sum(lp["token_logprobs"][ctxlen:-1]) == pytest.approx(expected, abs=1e-12)
    for tok, top in zip(lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True):
        assert tok <= max(top.values())  # greedy exactly when equal
    assert status_zero == 200 and len(zero["choices"][0]["logprobs"]["token_logprobs"]) == 5
    assert status_gen == 200 and gen["choices"][0]["text"].startswith("echo: ")
    assert status_chat == 200 and chat["choices"][0]["message"]["role"] == "assistant"
    assert status_bad == 400 and bad["error"]["type"] == "bad_request"
    assert status_stream == 400
    # Every prompt is recorded with its cache key; the max_tokens=0 call reused the echo call's rows.
    assert len(served) == 2 + 2 + 1 + 1
    assert [s.cached for s in served if s.endpoint == "/v1/completions" and s.kind == "token_logprobs"][2:] == [True, True]
    assert len({s.key for s in served}) == 4


def test_a_provider_failure_is_an_openai_error_after_the_core_retried(make_core) -> None:
    core = make_core(FakeProvider(fail_first=10))

    async def go():
        async with ModelGateway(core) as gw, aiohttp.ClientSession() as s:
            return await _post(s, gw.base_url + "/completions", {"prompt": "x", "max_tokens": 2})

    status, body = asyncio.run(go())
    assert status == 500 and body["error"]["type"] == "rate_limited"
    assert core.provider.fail_first == 10 - 3  # one try and max_retries=2 retries, then the error
