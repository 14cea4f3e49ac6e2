"""Micro-batching of the generate calls that concurrent jobs make one at a time.

Trajectories call the model one turn at a time; the in-process model serves a batch in one padded
forward pass. Calls that arrive within a short window are sent together, grouped by sampling
parameters and tools (docs/architecture.md, "One execution layer"). Retries stay in the core.

Each call comes back with the seconds its batch took in the provider, not counting the time it
waited for peers or for an earlier batch: a trajectory's time limit counts that (docs/architecture.md,
"Harness limits"). Batches go to the provider one at a time, and so do single calls to an in-process
model (`serial`), which serves one call at a time anyway: a call's time is then its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from engine.types import GenerateRequest, GenerateResponse, Provider

Timed = tuple[GenerateResponse, float]  # a response and the seconds its batch took in the provider


class MicroBatcher:
    """Gathers the generate calls of concurrent jobs into provider batches (one padded forward)."""

    def __init__(self, provider: Provider, window_s: float = 0.02, serial: bool = False):
        self.provider = provider
        self.window_s = window_s
        self.serial = serial
        self._pending: list[tuple[GenerateRequest, asyncio.Future[Timed]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._one_at_a_time: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    async def generate(self, request: GenerateRequest) -> Timed:
        if getattr(self.provider, "in_flight", 0):  # it batches calls as they come: no window, no queue here
            return await self._timed([request])
        if self.provider.max_batch <= 1:
            if not self.serial:
                return await self._timed([request])
            async with self._lock():
                return await self._timed([request])
        fut: asyncio.Future[Timed] = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    def cancel(self) -> None:
        """Stop sending batches and cancel the one in the provider (the run was interrupted)."""
        if self._flusher is not None:
            self._flusher.cancel()
        pending, self._pending = self._pending, []
        for _, fut in pending:
            fut.cancel()

    async def _timed(self, requests: list[GenerateRequest]) -> Timed:
        t0 = time.monotonic()
        [resp] = await self.provider.generate(requests)
        return resp, time.monotonic() - t0

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._one_at_a_time is None or self._one_at_a_time[0] is not loop:
            self._one_at_a_time = (loop, asyncio.Lock())
        return self._one_at_a_time[1]

    async def _flush(self) -> None:
        await asyncio.sleep(self.window_s)
        while self._pending:
            pending, self._pending = self._pending, []
            groups: dict[str, list[tuple[GenerateRequest, asyncio.Future[Timed]]]] = defaultdict(list)
            for r, f in pending:
                groups[r.sampling.model_dump_json() + repr(r.tools)].append((r, f))
            for group in groups.values():
                for i in range(0, len(group), self.provider.max_batch):
                    await self._send(group[i : i + self.provider.max_batch])

    async def _send(self, chunk: list[tuple[GenerateRequest, asyncio.Future[Timed]]]) -> None:
        t0 = time.monotonic()
        try:
            responses = await self.provider.generate([r for r, _ in chunk])
        except asyncio.CancelledError:
            for _, f in chunk:  # its callers are cancelled with it, never left waiting
                f.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - each caller sees the error and retries on its own
            for _, f in chunk:
                if not f.done():
                    f.set_exception(err)
            return
        seconds = time.monotonic() - t0
        for (_, f), resp in zip(chunk, responses, strict=True):
            if not f.done():
                f.set_result((resp, seconds))
