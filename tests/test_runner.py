"""The runner's own logic, driven by a scripted provider: retries, error isolation, cache, resume."""

from __future__ import annotations

import asyncio

import pytest

from engine.config.schema import HarnessConfig
from engine.runner.cache import ResultCache, cache_key
from engine.runner.core import RunnerCore
from engine.runner.work import WorkItem
from engine.types import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    ModelIdentity,
    ProviderError,
)


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


def test_cache_key_covers_where_and_how_the_model_is_served():
    ident = ModelIdentity(name="m", provider="litellm", api_base="http://a:8000/v1")
    req = LoglikelihoodRequest(context="c", continuations=(" x",))
    base = cache_key(ident, req, "single_turn", [], 0)
    assert base != cache_key(ident.model_copy(update={"api_base": "http://b:8000/v1"}), req, "single_turn", [], 0)
    assert base != cache_key(ident.model_copy(update={"tokenizer_hash": "t2"}), req, "single_turn", [], 0)
    assert base != cache_key(ident.model_copy(update={"options_hash": "o2"}), req, "single_turn", [], 0)


def test_a_corrupt_cache_row_is_a_miss_never_a_score(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "c.sqlite"
    provider = ScriptedProvider()
    items = _items(provider, ["q1", "q2"])
    asyncio.run(RunnerCore(provider, HARNESS, ResultCache(path), progress=False).run(items))
    db = sqlite3.connect(path)
    db.execute("UPDATE results_v2 SET value = value || ' ' WHERE key = ?", (items[0].key,))  # an edited row
    db.commit()
    db.close()
    calls = len(provider.calls)
    out = asyncio.run(RunnerCore(provider, HARNESS, ResultCache(path), progress=False).run(items))
    assert len(provider.calls) == calls + 1  # the edited row is re-computed
    assert not out[items[0].key].cached and out[items[1].key].cached
    assert "corrupt" in capsys.readouterr().err


def test_a_cache_another_process_keeps_locked_loses_no_answer_and_no_run(tmp_path, capsys, monkeypatch):
    """Writes that fail (another run's long transaction, a full disk) keep their answers queued for
    the next commit; the run goes on, and what never reached the cache is said at the end."""
    import sqlite3

    monkeypatch.setattr(ResultCache, "BUSY_TIMEOUT_S", 0.1)
    path = tmp_path / "c.sqlite"
    provider = ScriptedProvider()
    items = _items(provider, ["q1", "q2", "q3"])
    ResultCache(path).close()  # the file and its table exist
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    cache = ResultCache(path)
    out = asyncio.run(RunnerCore(provider, HARNESS, cache, progress=False).run(items[:2]))
    assert all(r.error is None and not r.cached for r in out.values())  # the run itself is unaffected
    assert "could not be written (database is locked)" in capsys.readouterr().err
    other.execute("COMMIT")  # the lock is gone: the queued answers go out with the next write
    cache.close()
    again = asyncio.run(RunnerCore(provider, HARNESS, ResultCache(path), progress=False).run(items[:2]))
    assert all(r.cached for r in again.values())
    other.execute("BEGIN IMMEDIATE")
    stuck = ResultCache(path)
    asyncio.run(RunnerCore(provider, HARNESS, stuck, progress=False).run(items[2:]))
    stuck.close()  # still locked: nothing is lost silently
    assert "1 answer(s) did not reach the response cache (database is locked)" in capsys.readouterr().err
    other.execute("ROLLBACK")


def test_a_cache_path_that_is_a_directory_is_a_clear_error(tmp_path):
    from engine.config.errors import ConfigError

    with pytest.raises(ConfigError, match="is a directory"):
        ResultCache(tmp_path)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="cannot be used"):
        ResultCache(tmp_path / "junk.sqlite")


class EmptyThenText:
    identity = ModelIdentity(name="empty", provider="litellm")
    max_batch = 1

    def __init__(self, empties: int, choices_empty: bool = False):
        self.empties = empties
        self.calls = 0

    async def generate(self, requests):
        self.calls += 1
        if self.empties > 0:
            self.empties -= 1
            return [GenerateResponse(text="  ") for _ in requests]
        return [GenerateResponse(text="Paris") for _ in requests]

    async def aclose(self):
        return None


def _gen_items(provider, n=1):
    reqs = [GenerateRequest(prompt=f"q{i}") for i in range(n)]
    return [WorkItem(key=cache_key(provider.identity, r, "single_turn", [], 0), request=r) for r in reqs]


def test_empty_output_is_an_error_retried_and_never_cached(tmp_path):
    path = tmp_path / "c.sqlite"
    provider = EmptyThenText(empties=100)
    h = HarnessConfig(max_retries=2, retry_backoff_s=0.001)
    [out] = asyncio.run(RunnerCore(provider, h, ResultCache(path), progress=False).run(_gen_items(provider))).values()
    assert out.response is None and out.error.kind == "empty_response" and out.error.attempts == 3
    assert ResultCache(path).get_many([_gen_items(provider)[0].key]) == {}
    provider = EmptyThenText(empties=1)  # a transient empty answer: the retry gets the real one
    [out] = asyncio.run(RunnerCore(provider, h, ResultCache(path), progress=False).run(_gen_items(provider))).values()
    assert out.response.text == "Paris" and out.attempts == 2


def test_retry_after_is_honoured_and_capped():
    from engine.runner.core import MAX_RETRY_AFTER_S, backoff_delay

    h = HarnessConfig(retry_backoff_s=0.01)
    assert 3.0 <= backoff_delay(h, 1, ProviderError("busy", transient=True, retry_after=3.0)) <= 3.0 * 1.25
    assert backoff_delay(h, 1, ProviderError("busy", transient=True, retry_after=1e6)) <= MAX_RETRY_AFTER_S * 1.25
    assert backoff_delay(h, 1, ProviderError("busy", transient=True)) <= 0.01 * 1.25


def test_warm_learns_the_request_kinds_to_come_and_plain_warm_still_works(tmp_path):
    """A provider whose `warm` takes `kinds` hears which kinds the run needs (the hf provider loads the
    lean loglikelihood forward for a loglikelihood-only run); a `warm()` without it is still called."""

    class KindsProvider(ScriptedProvider):
        def __init__(self):
            super().__init__()
            self.warmed: list[frozenset[str] | None] = []

        async def warm(self, kinds=None):
            self.warmed.append(kinds)

    class PlainWarm(ScriptedProvider):
        warmed = 0

        async def warm(self):
            PlainWarm.warmed += 1

    provider = KindsProvider()
    asyncio.run(RunnerCore(provider, HARNESS, ResultCache(None), progress=False).run(_items(provider, ["q1", "q2"])))
    assert provider.warmed == [frozenset({"loglikelihood"})]
    gen = KindsProvider()
    asyncio.run(RunnerCore(gen, HARNESS, ResultCache(None), progress=False).run(_gen_items(gen)))
    assert gen.warmed == [frozenset({"generate"})]
    plain = PlainWarm()
    out = asyncio.run(RunnerCore(plain, HARNESS, ResultCache(None), progress=False).run(_items(plain, ["q1"])))
    assert PlainWarm.warmed == 1 and all(o.error is None for o in out.values())


class InFlightProvider:
    """Batches requests as they come (the prefix engine's contract, `in_flight` > 0): each call is
    one request; 'long' answers only after `release` is set. Records how many calls run at once."""

    identity = ModelIdentity(name="inflight", provider="test", content_hash="abc")
    max_batch = 4
    in_flight = 6

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()
        self.answered: list[str] = []
        self.ll_sizes: list[int] = []

    async def generate(self, requests):
        self.sizes.append(len(requests))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if requests[0].prompt == "long":
                await self.release.wait()
            else:
                await asyncio.sleep(0.01)
            self.answered += [r.prompt for r in requests]
            return [GenerateResponse(text=f"a {r.prompt}") for r in requests]
        finally:
            self.running -= 1

    async def loglikelihood(self, requests):
        self.ll_sizes.append(len(requests))
        return [LoglikelihoodResponse(logprobs=(-1.0, -2.0), token_counts=(1, 1), is_greedy=(True, False)) for _ in requests]

    async def aclose(self):
        return None


def test_an_in_flight_provider_gets_its_requests_one_by_one_and_a_long_one_holds_no_other(tmp_path):
    """Sent in batches, a request that generates long held its whole batch, and the batches behind it
    waited for a concurrency slot: the prefix engine ran with a few rows while requests queued here."""
    provider = InFlightProvider()
    reqs = [GenerateRequest(prompt="long")] + [GenerateRequest(prompt=f"q{i}") for i in range(20)]
    items = [WorkItem(key=cache_key(provider.identity, r, "single_turn", [], 0), request=r) for r in reqs]
    items += _items(provider, [f"context {i}" for i in range(8)])  # loglikelihoods: batched as always
    core = RunnerCore(provider, HarnessConfig(concurrency=1), ResultCache(tmp_path / "c.sqlite"), progress=False)

    async def run() -> dict:
        async def release_when_the_others_are_done() -> None:
            while len(provider.answered) < 20:
                await asyncio.sleep(0.01)
            provider.release.set()

        releaser = asyncio.create_task(release_when_the_others_are_done())
        out = await asyncio.wait_for(core.run(items, keep_order=True), timeout=30)
        await releaser
        return out

    outcomes = asyncio.run(run())
    assert set(provider.sizes) == {1} and provider.ll_sizes == [4, 4]
    assert provider.peak == provider.in_flight  # as many at once as it queues, not harness.concurrency
    assert provider.answered[-1] == "long" and all(o.response is not None for o in outcomes.values())
