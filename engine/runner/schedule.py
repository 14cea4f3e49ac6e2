"""Async execution of requests: batching, concurrency limit, retries with backoff, cache, progress."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from engine.api import GenerateRequest, InstanceError, Provider, ProviderError, Request, Response
from engine.config.schema import HarnessConfig
from engine.runner.cache import ResponseCache


class WorkItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    request: Request


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    response: Response | None = None
    error: InstanceError | None = None
    latency_s: float = 0.0
    cached: bool = False
    attempts: int = 0


def _batches(items: list[WorkItem], size: int) -> list[list[WorkItem]]:
    groups: dict[str, list[WorkItem]] = defaultdict(list)
    for it in items:
        req = it.request
        group = f"gen:{req.sampling.model_dump_json()}" if isinstance(req, GenerateRequest) else "ll"
        groups[group].append(it)
    out = []
    for group in groups.values():
        # Similar lengths together: less padding per batch.
        group.sort(key=lambda it: len(it.request.render_text() if isinstance(it.request, GenerateRequest) else it.request.context))
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


async def _call(provider: Provider, batch: list[WorkItem]) -> list[Response]:
    reqs = [it.request for it in batch]
    if isinstance(reqs[0], GenerateRequest):
        return await provider.generate(reqs)  # type: ignore[arg-type]
    return await provider.loglikelihood(reqs)  # type: ignore[arg-type]


class Runner:
    def __init__(self, provider: Provider, harness: HarnessConfig, cache: ResponseCache, progress: bool = True):
        self.provider = provider
        self.harness = harness
        self.cache = cache
        self.progress = progress

    async def _run_batch(self, batch: list[WorkItem], results: dict[str, Outcome], bar) -> None:
        h = self.harness
        attempts = 0
        while True:
            attempts += 1
            start = time.monotonic()
            try:
                responses = await asyncio.wait_for(_call(self.provider, batch), timeout=h.request_timeout_s)
            except (ProviderError, asyncio.TimeoutError) as err:
                transient = isinstance(err, asyncio.TimeoutError) or err.transient
                if transient and attempts <= h.max_retries:
                    await asyncio.sleep(h.retry_backoff_s * 2 ** (attempts - 1) * (1 + random.random() * 0.25))
                    continue
                if len(batch) > 1:  # isolate the failing request(s)
                    for it in batch:
                        await self._run_batch([it], results, bar)
                    return
                kind = "timeout" if isinstance(err, asyncio.TimeoutError) else err.kind
                message = str(err) or f"no response within {h.request_timeout_s} s"
                results[batch[0].key] = Outcome(error=InstanceError(kind=kind, message=message, attempts=attempts), attempts=attempts)
                bar.update(1)
                return
            except Exception as err:  # noqa: BLE001 - a bug in one batch must not lose the run
                if len(batch) > 1:
                    for it in batch:
                        await self._run_batch([it], results, bar)
                    return
                results[batch[0].key] = Outcome(
                    error=InstanceError(kind=type(err).__name__, message=str(err)[:1000], attempts=attempts),
                    attempts=attempts,
                )
                bar.update(1)
                return
            latency = (time.monotonic() - start) / len(batch)
            self.cache.put_many({it.key: r for it, r in zip(batch, responses, strict=True)})
            for it, r in zip(batch, responses, strict=True):
                results[it.key] = Outcome(response=r, latency_s=latency, attempts=attempts)
            bar.update(len(batch))
            return

    async def run(self, items: Sequence[WorkItem], label: str = "") -> dict[str, Outcome]:
        from tqdm import tqdm

        unique = list({it.key: it for it in items}.values())
        cached = self.cache.get_many([it.key for it in unique])
        results: dict[str, Outcome] = {k: Outcome(response=v, cached=True) for k, v in cached.items()}
        pending = [it for it in unique if it.key not in cached]
        bar = tqdm(
            total=len(unique), initial=len(cached), desc=label, unit="req", file=sys.stderr,
            disable=not self.progress, dynamic_ncols=True, leave=False,
        )
        sem = asyncio.Semaphore(max(1, self.harness.concurrency))

        async def guarded(batch: list[WorkItem]) -> None:
            async with sem:
                await self._run_batch(batch, results, bar)

        try:
            await asyncio.gather(*(guarded(b) for b in _batches(pending, max(1, self.provider.max_batch))))
        finally:
            bar.close()
        return results
