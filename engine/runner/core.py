"""The runner core: the one place that schedules, limits, retries, caches and shows progress.

Every kind of work is a `WorkItem` (docs/architecture.md, "One execution layer"):

- a model request (`request`, no `job`): batched with its peers and sent to the provider, retried
  on transient errors with backoff (honouring Retry-After), its result cached;
- a job (`job`): a whole trajectory (a scaffold), a sandboxed execution, ... an async function the
  core runs under the same concurrency limit. A job's model calls come back to the core through
  `JobContext.call_model` (retried, timed out, micro-batched with the calls of concurrent jobs);
  nothing else talks to the provider, caches or retries.

Empty or malformed provider output is an error (kind `empty_response` / `malformed_response`,
engine/runner/work.py `check_response`), retried like a transient error and never cached.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from engine.config.schema import HarnessConfig
from engine.runner.batching import MicroBatcher
from engine.runner.cache import ResultCache, WorkResult
from engine.runner.progress import WorkProgress, item_weights, request_chars
from engine.runner.retry import should_retry
from engine.runner.work import Interrupted, JobContext, Outcome, WorkItem, check_response
from engine.types import (
    GenerateRequest,
    GenerateResponse,
    InstanceError,
    Provider,
    ProviderError,
    TokenLogprobsRequest,
    WorkRequest,
    WorkResponse,
)

MAX_RETRY_AFTER_S = 60.0  # a server asking for longer is not waited for beyond this


def backoff_delay(h: HarnessConfig, attempt: int, err: BaseException) -> float:
    """Exponential backoff with jitter; a server's Retry-After (capped) is a lower bound."""
    delay = h.retry_backoff_s * 2 ** (attempt - 1)
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER_S))
    return delay * (1 + random.random() * 0.25)


def _error_of(err: BaseException, attempts: int, timeout_s: float) -> InstanceError:
    if isinstance(err, asyncio.TimeoutError):
        return InstanceError(kind="timeout", message=f"no response within {timeout_s} s", attempts=attempts)
    kind = err.kind if isinstance(err, ProviderError) else type(err).__name__
    return InstanceError(kind=kind, message=(str(err) or type(err).__name__)[:1000], attempts=attempts)


def _batches(items: list[WorkItem], size: int, keep_order: bool = False) -> list[list[WorkItem]]:
    groups: dict[str, list[WorkItem]] = defaultdict(list)
    for it in items:
        req = it.request
        name = f"gen:{req.sampling.model_dump_json()}" if isinstance(req, GenerateRequest) else req.kind  # type: ignore[union-attr]
        groups[name].append(it)
    out: list[list[WorkItem]] = []
    for group in groups.values():
        # Longest first: similar lengths share a batch (less padding) and the ETA holds at the end.
        if not keep_order:  # the caller planned the order (engine/runner/task_run.py `batch_order`)
            group.sort(key=lambda it: -request_chars(it.request))
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


@asynccontextmanager
async def _nothing(_: int) -> AsyncIterator[None]:
    yield None


class RunnerCore:
    """Runs work items for one provider with one harness policy and one cache."""

    def __init__(self, provider: Provider, harness: HarnessConfig, cache: ResultCache, progress: bool = True):
        self.provider = provider
        self.harness = harness
        self.cache = cache
        self.progress = progress
        self.local = provider.identity.provider == "hf"  # in-process: its output is the model's own
        self._batcher = MicroBatcher(provider, serial=self.local)
        self.model_calls = 0
        self._warmed = False
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._warm_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._inflight: dict[str, asyncio.Future[Outcome]] = {}
        self._queue: list[WorkItem] = []
        self._flusher: asyncio.Task[None] | None = None
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self.submit_window_s = 0.02  # how long a submission waits for peers to share its batch

    def limit(self) -> asyncio.Semaphore:
        """The core's one concurrency limit, shared by `run` and every `submit` (per event loop)."""
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(max(1, self.harness.concurrency)))
        return self._limit[1]

    async def warm(self, kinds: frozenset[str] | None = None) -> None:
        """Let the provider load what it needs (weights, the litellm module) once, before any request's
        timeout starts counting. Test doubles and third-party providers may not define `warm`; a
        provider whose `warm` takes `kinds` learns which request kinds are coming (None: unknown)."""
        if self._warmed:
            return
        loop = asyncio.get_running_loop()
        if self._warm_lock is None or self._warm_lock[0] is not loop:
            self._warm_lock = (loop, asyncio.Lock())
        async with self._warm_lock[1]:  # concurrent submissions must not load the weights twice at once
            if not self._warmed and (warm := getattr(self.provider, "warm", None)) is not None:
                await (warm(kinds) if "kinds" in inspect.signature(warm).parameters else warm())
            self._warmed = True

    # -- model calls ---------------------------------------------------------------------------
    async def _provider_call(self, batch: list[WorkRequest]) -> list[WorkResponse]:
        self.model_calls += 1
        if isinstance(batch[0], GenerateRequest):
            out: list[WorkResponse] = list(await self.provider.generate(batch))  # type: ignore[arg-type]
        elif isinstance(batch[0], TokenLogprobsRequest):
            # Optional: only providers that can score prompt tokens exactly define it (hf).
            token_logprobs = getattr(self.provider, "token_logprobs", None)
            if token_logprobs is None:
                raise ProviderError(
                    f"provider {self.provider.identity.provider!r} cannot return prompt-token logprobs (echo), "
                    "which this request needs; serve the model with provider hf", kind="unsupported")
            out = list(await token_logprobs(batch))
        else:
            out = list(await self.provider.loglikelihood(batch))  # type: ignore[arg-type]
        if len(out) != len(batch):
            raise ProviderError(f"{len(out)} responses for {len(batch)} requests", kind="malformed_response")
        for req, resp in zip(batch, out, strict=True):
            check_response(req, resp, self.local)
        return out

    async def call_model(self, request: GenerateRequest, timeout_s: float | None = None
                         ) -> tuple[GenerateResponse, int, float]:
        """One generate call of a job: (response, attempts, seconds its answered attempt's batch took
        in the provider, without the time queued for a batch: what a trajectory's time limit counts,
        docs/architecture.md, "Harness limits"). Retried; raises the last error."""
        await self.warm()
        h = self.harness
        timeout = min(h.request_timeout_s, timeout_s) if timeout_s is not None else h.request_timeout_s
        attempts = 0
        while True:
            attempts += 1
            try:
                self.model_calls += 1
                resp, provider_s = await asyncio.wait_for(self._batcher.generate(request), timeout=timeout)
                check_response(request, resp, self.local)
                return resp, attempts, provider_s
            except (ProviderError, asyncio.TimeoutError) as err:  # a request timeout too, as in a batch
                if should_retry(err, attempts, h):
                    await asyncio.sleep(backoff_delay(h, attempts, err))
                    continue
                raise

    # -- work items ------------------------------------------------------------------------------
    async def _run_batch(self, batch: list[WorkItem], results: dict[str, Outcome], bar: WorkProgress) -> None:
        h = self.harness
        attempts = 0
        while True:
            attempts += 1
            start = time.monotonic()
            try:
                requests = [it.request for it in batch]
                async with asyncio.timeout(h.request_timeout_s):  # unlike wait_for, no extra task per request
                    responses = await self._provider_call(requests)  # type: ignore[arg-type]
            except Exception as err:  # noqa: BLE001 - one bad batch must not lose the run
                if should_retry(err, attempts, h):
                    await asyncio.sleep(backoff_delay(h, attempts, err))
                    continue
                if len(batch) > 1:  # isolate the failing request(s)
                    for it in batch:
                        await self._run_batch([it], results, bar)
                    return
                results[batch[0].key] = Outcome(error=_error_of(err, attempts, h.request_timeout_s), attempts=attempts)
                bar.advance([batch[0].key])
                return
            latency = (time.monotonic() - start) / len(batch)
            done = {it.key: WorkResult(response=r) for it, r in zip(batch, responses, strict=True)}
            self.cache.put_soon(done)  # group commit: one transaction per event-loop turn
            for key, result in done.items():
                results[key] = Outcome(result=result, latency_s=latency, attempts=attempts)
            bar.advance(list(done))
            return

    async def _run_job(self, item: WorkItem, ctx: JobContext, results: dict[str, Outcome], bar: WorkProgress) -> None:
        assert item.job is not None
        t0 = time.monotonic()
        try:
            result = await item.job(ctx)
        except Exception as err:  # noqa: BLE001 - a bug in one job must not lose the run
            results[item.key] = Outcome(error=_error_of(err, 1, self.harness.request_timeout_s), attempts=1,
                                        latency_s=time.monotonic() - t0)
        else:
            latency = time.monotonic() - t0
            if result.error is not None:  # the job ended in an error of its own: kept with its steps, not cached
                results[item.key] = Outcome(result=result, error=result.error, latency_s=latency, attempts=1)
            else:
                if item.cacheable:
                    self.cache.put_soon({item.key: result})
                results[item.key] = Outcome(result=result, latency_s=latency, attempts=1)
        bar.advance([item.key])

    async def run(
        self,
        items: Sequence[WorkItem],
        label: str = "",
        resources: Callable[[int], AbstractAsyncContextManager[Any]] | None = None,
        keep_order: bool = False,
    ) -> dict[str, Outcome]:
        """Outcomes by key. `resources(n_pending)` opens what the pending jobs need (sandbox pools),
        only when something is not cached, and closes it on every exit. `keep_order`: requests are
        batched in the given order (the caller planned it) instead of longest first."""
        unique = list({it.key: it for it in items}.values())
        cached = self.cache.get_many([it.key for it in unique if it.cacheable])
        results: dict[str, Outcome] = {k: Outcome(result=v, cached=True) for k, v in cached.items()}
        pending = [it for it in unique if it.key not in cached]
        bar = WorkProgress(item_weights(unique), list(cached), label, self.progress)
        sem = self.limit()
        requests = [it for it in pending if it.job is None]
        jobs = [it for it in pending if it.job is not None]

        async def batch_guarded(batch: list[WorkItem], limit: asyncio.Semaphore) -> None:
            async with limit:
                await self._run_batch(batch, results, bar)

        async def job_guarded(item: WorkItem, ctx: JobContext) -> None:
            async with sem:
                await self._run_job(item, ctx, results, bar)

        try:
            if requests or any(it.uses_model for it in jobs):  # sandboxed executions alone load no model
                await self.warm(frozenset(it.request.kind for it in requests if it.request is not None)
                                | ({"generate"} if any(it.uses_model for it in jobs) else set()))
            if pending:
                bar.start()
            if requests:
                await asyncio.gather(*(batch_guarded(b, limit) for b, limit in self._request_batches(requests, sem, keep_order)))
            if jobs:
                async with (resources or _nothing)(len(jobs)) as opened:
                    ctx = JobContext(call_model=self.call_model, resources=opened)
                    await asyncio.gather(*(job_guarded(it, ctx) for it in jobs))
        except asyncio.CancelledError:
            # Ctrl-C or SIGTERM: what finished is kept (and cached); the batch in the provider is
            # cancelled with its trajectories (docs/architecture.md, "Stopping a run").
            self._batcher.cancel()
            raise Interrupted(results) from None
        finally:
            self.cache.flush()
            bar.close()
        return results

    def _request_batches(self, requests: list[WorkItem], sem: asyncio.Semaphore, keep_order: bool
                         ) -> list[tuple[list[WorkItem], asyncio.Semaphore]]:
        """Provider batches, each with the limit it runs under. A provider that batches generate
        requests in flight (`in_flight`, known once warm) takes those one at a time, as many at once
        as it queues (docs/architecture.md, "The generation path")."""
        in_flight = int(getattr(self.provider, "in_flight", 0) or 0)
        if not in_flight:
            return [(b, sem) for b in _batches(requests, max(1, self.provider.max_batch), keep_order)]
        single = [it for it in requests if isinstance(it.request, GenerateRequest)]
        rest = [it for it in requests if not isinstance(it.request, GenerateRequest)]
        queued = asyncio.Semaphore(in_flight)
        return ([(b, sem) for b in _batches(rest, max(1, self.provider.max_batch), keep_order)]
                + [(b, queued) for b in _batches(single, 1, keep_order)])

    # -- single submissions ----------------------------------------------------------------------
    async def submit(self, item: WorkItem) -> Outcome:
        """One work item submitted on its own (the model gateway of external evals: one HTTP call
        each): the cache first, then the core's shared concurrency limit, retries, `check_response`
        and the cache write, exactly as `run`. Request items submitted concurrently (within
        `submit_window_s`) are micro-batched into provider batches; concurrent submissions of one
        key share one computation."""
        if item.cacheable:
            hit = self.cache.get_many([item.key]).get(item.key)
            if hit is not None:
                return Outcome(result=hit, cached=True)
        running = self._inflight.get(item.key)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._inflight[item.key] = fut
        try:
            await self.warm()
            if item.job is not None:
                results: dict[str, Outcome] = {}
                async with self.limit():
                    await self._run_job(item, JobContext(call_model=self.call_model), results, _SILENT)
                fut.set_result(results[item.key])
            else:
                self._queue.append(item)
                if self._flusher is None or self._flusher.done():
                    self._flusher = asyncio.create_task(self._flush_submissions())
            return await asyncio.shield(fut)
        except Exception as err:  # noqa: BLE001 - e.g. the weights failed to load: an error outcome, never a hang
            if not fut.done():
                fut.set_result(Outcome(error=_error_of(err, 1, self.harness.request_timeout_s), attempts=1))
            return fut.result()
        finally:
            if self._inflight.get(item.key) is fut and fut.done():
                del self._inflight[item.key]  # a request's batch removes it itself; a job's is done here

    async def _flush_submissions(self) -> None:
        """Forms a batch each time the concurrency limit has room, from what is queued then: the
        batches fill up while earlier ones run."""
        await asyncio.sleep(self.submit_window_s)
        sem = self.limit()
        while self._queue:
            await sem.acquire()
            if not self._queue:
                sem.release()
                break
            batch = _batches(self._queue, max(1, self.provider.max_batch))[0]
            taken = {it.key for it in batch}
            self._queue = [it for it in self._queue if it.key not in taken]
            task = asyncio.create_task(self._submitted_batch(batch, sem))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)

    async def _submitted_batch(self, batch: list[WorkItem], sem: asyncio.Semaphore) -> None:
        results: dict[str, Outcome] = {}
        try:
            await self._run_batch(batch, results, _SILENT)
        finally:
            sem.release()
            for it in batch:
                fut = self._inflight.pop(it.key, None)
                if fut is not None and not fut.done():
                    fut.set_result(results.get(it.key) or Outcome(
                        error=InstanceError(kind="internal", message="the batch ended without a result", attempts=0)))


class _Silent:
    """A progress bar that shows nothing (the `WorkProgress` interface): single submissions are
    counted by their caller."""

    def update(self, n: int = 1) -> None:
        return None

    def advance(self, keys: Sequence[str]) -> None:
        return None


_SILENT: Any = _Silent()
