"""Micro-batching of the generate calls that concurrent jobs make one at a time.

Trajectories call the model one turn at a time; the in-process model serves a batch in one padded
forward pass. Calls that arrive within a short window are sent together, grouped by sampling
parameters and tools (docs/architecture.md, "One execution layer"). Retries stay in the core.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from engine.api import GenerateRequest, GenerateResponse, Provider


class MicroBatcher:
    """Gathers the generate calls of concurrent jobs into provider batches (one padded forward)."""

    def __init__(self, provider: Provider, window_s: float = 0.02):
        self.provider = provider
        self.window_s = window_s
        self._pending: list[tuple[GenerateRequest, asyncio.Future[GenerateResponse]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        if self.provider.max_batch <= 1:
            [resp] = await self.provider.generate([request])
            return resp
        fut: asyncio.Future[GenerateResponse] = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        await asyncio.sleep(self.window_s)
        while self._pending:
            pending, self._pending = self._pending, []
            groups: dict[str, list[tuple[GenerateRequest, asyncio.Future[GenerateResponse]]]] = defaultdict(list)
            for r, f in pending:
                groups[r.sampling.model_dump_json() + repr(r.tools)].append((r, f))
            for group in groups.values():
                for i in range(0, len(group), self.provider.max_batch):
                    await self._send(group[i : i + self.provider.max_batch])

    async def _send(self, chunk: list[tuple[GenerateRequest, asyncio.Future[GenerateResponse]]]) -> None:
        try:
            responses = await self.provider.generate([r for r, _ in chunk])
        except Exception as err:  # noqa: BLE001 - each caller sees the error and retries on its own
            for _, f in chunk:
                if not f.done():
                    f.set_exception(err)
            return
        for (_, f), resp in zip(chunk, responses, strict=True):
            if not f.done():
                f.set_result(resp)
