"""The runner's own logic, driven by a scripted provider: retries, error isolation, cache, resume."""

from __future__ import annotations

import asyncio

from engine.api import LoglikelihoodRequest, LoglikelihoodResponse, ModelIdentity, ProviderError
from engine.config.schema import HarnessConfig
from engine.runner.cache import ResultCache, cache_key
from engine.runner.core import RunnerCore, WorkItem


class ScriptedProvider:
    """Fails transiently `flaky` times, fails for good on contexts containing 'bad'."""

    def __init__(self, flaky: int = 0):
        self.identity = ModelIdentity(name="scripted", provider="test", content_hash="abc")
        self.max_batch = 4
        self.calls: list[int] = []
        self.flaky = flaky

    async def loglikelihood(self, requests):
        self.calls.append(len(requests))
        if self.flaky > 0:
            self.flaky -= 1
            raise ProviderError("server busy", transient=True)
        if any("bad" in r.context for r in requests):
            raise ProviderError("malformed request", transient=False, kind="bad_request")
        return [LoglikelihoodResponse(logprobs=(-1.0, -2.0), token_counts=(1, 1), is_greedy=(True, False)) for _ in requests]

    async def generate(self, requests):
        raise AssertionError("not used")

    async def aclose(self):
        return None


def _items(provider, contexts):
    out = []
    for c in contexts:
        req = LoglikelihoodRequest(context=c, continuations=(" a", " b"))
        out.append(WorkItem(key=cache_key(provider.identity, req, "single_turn", [], 0), request=req))
    return out


HARNESS = HarnessConfig(max_retries=3, retry_backoff_s=0.001, concurrency=2)


def test_transient_errors_are_retried_with_backoff(tmp_path):
    provider = ScriptedProvider(flaky=2)
    runner = RunnerCore(provider, HARNESS, ResultCache(tmp_path / "c.sqlite"), progress=False)
    out = asyncio.run(runner.run(_items(provider, ["q1"])))
    (outcome,) = out.values()
    assert outcome.error is None and outcome.attempts == 3
    assert provider.calls == [1, 1, 1]


def test_permanent_failure_is_isolated_and_recorded_not_scored(tmp_path):
    provider = ScriptedProvider()
    runner = RunnerCore(provider, HARNESS, ResultCache(tmp_path / "c.sqlite"), progress=False)
    items = _items(provider, ["q1", "q2 bad", "q3"])
    out = asyncio.run(runner.run(items))
    errors = {k: o.error for k, o in out.items() if o.error}
    assert list(errors) == [items[1].key]
    assert errors[items[1].key].kind == "bad_request" and errors[items[1].key].attempts == 1
    assert out[items[0].key].response is not None and out[items[2].key].response is not None


def test_exhausted_retries_become_errors(tmp_path):
    provider = ScriptedProvider(flaky=100)
    runner = RunnerCore(provider, HarnessConfig(max_retries=2, retry_backoff_s=0.001), ResultCache(None), progress=False)
    (outcome,) = asyncio.run(runner.run(_items(provider, ["q"]))).values()
    assert outcome.response is None and outcome.error.attempts == 3


def test_cache_means_a_rerun_calls_no_model_and_a_partial_run_resumes(tmp_path):
    path = tmp_path / "c.sqlite"
    provider = ScriptedProvider()
    first = _items(provider, ["q1", "q2"])
    asyncio.run(RunnerCore(provider, HARNESS, ResultCache(path), progress=False).run(first))
    calls_before = len(provider.calls)
    # "killed" after two; the resumed run only sends the missing ones
    out = asyncio.run(RunnerCore(provider, HARNESS, ResultCache(path), progress=False).run(_items(provider, ["q1", "q2", "q3"])))
    assert sum(provider.calls[calls_before:]) == 1
    assert sum(o.cached for o in out.values()) == 2
    # a full re-run: no calls at all
    n = len(provider.calls)
    asyncio.run(RunnerCore(provider, HARNESS, ResultCache(path), progress=False).run(_items(provider, ["q1", "q2", "q3"])))
    assert len(provider.calls) == n


def test_cache_key_depends_on_model_request_scaffold_and_sample():
    ident = ModelIdentity(name="m", provider="hf", path="/a", content_hash="h1")
    req = LoglikelihoodRequest(context="c", continuations=(" x",))
    base = cache_key(ident, req, "single_turn", [], 0)
    assert base == cache_key(ident.model_copy(update={"path": "/elsewhere"}), req, "single_turn", [], 0)
    assert base != cache_key(ident.model_copy(update={"content_hash": "h2"}), req, "single_turn", [], 0)
    assert base != cache_key(ident, req, "tool_loop", [], 0)
    assert base != cache_key(ident, req, "single_turn", ["search"], 0)
    assert base != cache_key(ident, req, "single_turn", [], 1)
    assert base != cache_key(ident, req.model_copy(update={"context": "d"}), "single_turn", [], 0)
