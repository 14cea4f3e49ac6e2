"""A pool of identical warm sandboxes: lend one per execution, reset it, lend it again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from engine.sandbox.base import Sandbox, SandboxError
from engine.sandbox.bwrap import BwrapSandbox
from engine.sandbox.docker_backend import DockerSandbox
from engine.sandbox.local import LocalSandbox
from engine.sandbox.models import SandboxPoolConfig

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[Sandbox]] = {
    "local": LocalSandbox, "bwrap": BwrapSandbox, "docker": DockerSandbox,
}


class PoolStats:
    def __init__(self) -> None:
        self.started = 0
        self.executions = 0
        self.resets = 0
        self.replaced = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class SandboxPool:
    """At most ``size`` sandboxes; each is lent to one user at a time and reset on return.

    Invariant: the semaphore counts sandboxes that are neither idle nor broken, so whoever holds
    a permit finds an idle sandbox or may create one. The reset after a loan runs in the
    background (the borrower does not wait for it) and returns the permit when done.
    """

    def __init__(self, config: SandboxPoolConfig, size: int | None = None) -> None:
        self.config = config
        self.size = max(1, min(size if size is not None else config.max_size, config.max_size))
        self._sem = asyncio.Semaphore(self.size)
        self._idle: list[Sandbox] = []
        self._all: list[Sandbox] = []
        self._next_index = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False
        self.stats = PoolStats()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def live(self) -> int:
        return len(self._all)

    def resize(self, size: int) -> None:
        """Set the planned size (only before any loan)."""
        size = max(1, min(size, self.config.max_size))
        self._sem = asyncio.Semaphore(size)
        self.size = size

    async def _new(self) -> Sandbox:
        sb = BACKENDS[self.config.backend](self.config, self._next_index)
        self._next_index += 1
        self._all.append(sb)
        try:
            await sb.start()
        except BaseException:
            if sb in self._all:
                self._all.remove(sb)
            with contextlib.suppress(Exception):
                await sb.stop()
            raise
        if self._closed:  # closed while it was starting (e.g. Ctrl-C): do not leak it
            if sb in self._all:
                self._all.remove(sb)
            await sb.stop()
            raise SandboxError(f"pool {self.name} is closed")
        self.stats.started += 1
        return sb

    async def warm(self, n: int) -> None:
        """Start up to ``n`` sandboxes concurrently and keep them idle."""
        n = min(n, self.size) - len(self._all)
        if n <= 0:
            return
        started = await asyncio.gather(*(self._new() for _ in range(n)), return_exceptions=True)
        errors = [e for e in started if isinstance(e, BaseException)]
        self._idle.extend(sb for sb in started if isinstance(sb, Sandbox))
        if errors:
            raise SandboxError(f"pool {self.name}: {len(errors)} sandbox(es) failed to start: "
                               f"{errors[0]}") from errors[0]

    async def _discard(self, sb: Sandbox) -> None:
        if sb in self._all:
            self._all.remove(sb)
        with contextlib.suppress(Exception):
            await sb.stop()

    async def _recycle(self, sb: Sandbox) -> None:
        try:
            if self._closed:
                await self._discard(sb)
                return
            await sb.reset()
            self.stats.resets += 1
            self._idle.append(sb)
        except Exception as e:  # noqa: BLE001 - a broken sandbox is replaced, not fatal
            log.warning("pool %s: reset of %s failed (%s); replacing it", self.name, sb, e)
            self.stats.replaced += 1
            await self._discard(sb)
        finally:
            self._sem.release()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Sandbox]:
        """Lend a warm sandbox with a fresh work dir; it is reset after the block."""
        if self._closed:
            raise SandboxError(f"pool {self.name} is closed")
        await self._sem.acquire()
        try:
            sb = self._idle.pop() if self._idle else await self._new()
        except BaseException:
            self._sem.release()
            raise
        broken = False
        try:
            yield sb
        except SandboxError:
            broken = True
            raise
        finally:
            if broken:
                self.stats.replaced += 1
                await self._discard(sb)
                self._sem.release()
            else:
                task = asyncio.get_running_loop().create_task(self._recycle(sb))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Stop every sandbox (idempotent)."""
        self._closed = True
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=30)
        sandboxes, self._all, self._idle = list(self._all), [], []
        await asyncio.gather(*(sb.stop() for sb in sandboxes), return_exceptions=True)
