"""A pool of identical warm sandboxes: lend one per execution, reset it, lend it again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from engine.sandbox.base import Sandbox, SandboxError, SandboxUnavailableError
from engine.sandbox.bwrap import BwrapSandbox
from engine.sandbox.docker_backend import DockerSandbox
from engine.sandbox.docker_hosts import check_host
from engine.sandbox.health import pool_unavailable_reason
from engine.sandbox.local import LocalSandbox
from engine.sandbox.models import DockerHost, SandboxPoolConfig

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

    def __init__(self, config: SandboxPoolConfig, size: int | None = None,
                 host: DockerHost | None = None) -> None:
        self.config = config
        self.host = host  # docker pools over several hosts: one SandboxPool per host
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
        sb = (DockerSandbox(self.config, self._next_index, host=self.host) if self.host
              else BACKENDS[self.config.backend](self.config, self._next_index))
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

    async def unavailable_reason(self) -> str | None:
        """Why no sandbox of this pool can start now (None: the backend works)."""
        return await pool_unavailable_reason(self.config, self.host)

    async def close(self) -> None:
        """Stop every sandbox (idempotent)."""
        self._closed = True
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=30)
        sandboxes, self._all, self._idle = list(self._all), [], []
        await asyncio.gather(*(sb.stop() for sb in sandboxes), return_exceptions=True)


class _Host:
    """One docker host of a ``MultiHostPool``: its own pool, its cap, its load."""

    def __init__(self, host: DockerHost, pool: SandboxPool) -> None:
        self.host = host
        self.pool = pool
        self.cap = 0  # planned sandboxes on this host (0: unused or down)
        self.busy = 0
        self.served = 0
        self.down: str | None = None  # why it was taken out


class _MultiStats(PoolStats):
    def __init__(self, hosts: list[_Host]) -> None:
        super().__init__()
        self._hosts = hosts

    def as_dict(self) -> dict[str, int]:
        out = {"executions": self.executions}
        for key in ("started", "resets", "replaced"):
            out[key] = sum(getattr(h.pool.stats, key) for h in self._hosts)
        out.update({f"executions@{h.host.url}": h.served for h in self._hosts})
        return out


class MultiHostPool:
    """A docker pool spread over several hosts, with ``SandboxPool``'s interface.

    Each host has its own pool, capped by its ``concurrency``; the planned size is dealt out
    round-robin, and each loan goes to the healthy host with the lowest load (ties: the one that
    served least). Hosts are health-checked (daemon answers, image present or copied there) before
    the first sandbox starts, and again when one fails; a failing host is taken out with its reason
    and its executions go to the others. No healthy host left: ``SandboxUnavailableError`` (an
    error, never a score).
    """

    def __init__(self, config: SandboxPoolConfig, size: int | None = None) -> None:
        self.config = config
        self.size = max(1, min(size if size is not None else config.max_size, config.max_size))
        self._hosts = [_Host(h, SandboxPool(config, host=h)) for h in config.docker_hosts]
        self._cond = asyncio.Condition()
        self._check: asyncio.Future[None] | None = None
        self._closed = False
        self.stats = _MultiStats(self._hosts)
        self._spread()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def live(self) -> int:
        return sum(h.pool.live for h in self._hosts)

    def usage(self) -> dict[str, int]:
        """Loans served per host URL."""
        return {h.host.url: h.served for h in self._hosts}

    def _spread(self) -> None:
        healthy = [h for h in self._hosts if h.down is None]
        for h in self._hosts:
            h.cap = 0
        left = self.size
        while left > 0:
            open_hosts = [h for h in healthy if h.cap < (h.host.concurrency or self.config.max_size)]
            if not open_hosts:
                break
            for h in open_hosts[:left]:
                h.cap += 1
            left -= len(open_hosts[:left])
        for h in healthy:
            if h.cap:
                h.pool.resize(h.cap)

    def resize(self, size: int) -> None:
        self.size = max(1, min(size, self.config.max_size))
        self._spread()

    def _take_out(self, h: _Host, reason: str) -> None:
        if h.down is not None:
            return
        h.down, h.cap = reason, 0  # the other hosts keep their caps: resizing needs no loans out
        others = [o.host.url for o in self._hosts if o.down is None]
        print(f"[evalbench] warning: docker host {h.host.url} of sandbox pool {self.name!r} is "
              f"taken out: {reason}; its executions go to "
              f"{', '.join(others) if others else 'no other host (none is left)'}.",
              file=sys.stderr)

    def _down_reason(self) -> str | None:
        if all(h.down is not None for h in self._hosts):
            return "; ".join(f"{h.host.url}: {h.down}" for h in self._hosts)
        return None

    def _require_healthy(self) -> None:
        if (reasons := self._down_reason()) is not None:
            raise SandboxUnavailableError(f"pool {self.name}: no docker host is usable ({reasons})")

    async def unavailable_reason(self) -> str | None:
        """Why no host can run an execution (None while one is healthy); the failing ones were
        re-checked and taken out when their execution failed."""
        return self._down_reason()

    async def check(self) -> None:
        """Health-check every host once (concurrently); take out the ones that fail."""
        if self._check is None:
            self._check = asyncio.ensure_future(self._check_all())
        await asyncio.shield(self._check)

    async def _check_all(self) -> None:
        image = self.config.effective_image or ""
        peers = [h.host for h in self._hosts]
        reasons = await asyncio.gather(*(asyncio.to_thread(check_host, h.host, image, peers)
                                         for h in self._hosts))
        for h, reason in zip(self._hosts, reasons, strict=True):
            if reason is not None:
                self._take_out(h, reason)
        self._spread()  # before any loan: the healthy hosts share the planned size
        self._require_healthy()

    async def warm(self, n: int) -> None:
        await self.check()
        n = min(n, self.size)
        counts: dict[int, int] = {}
        healthy = [h for h in self._hosts if h.down is None and h.cap]
        for i in range(n):
            h = healthy[i % len(healthy)]
            counts[id(h)] = min(counts.get(id(h), 0) + 1, h.cap)
        targets = [h for h in healthy if counts.get(id(h))]
        results = await asyncio.gather(*(h.pool.warm(counts[id(h)]) for h in targets),
                                       return_exceptions=True)
        for h, r in zip(targets, results, strict=True):
            if isinstance(r, BaseException):
                self._take_out(h, f"sandboxes failed to start: {r}")
        self._spread()
        self._require_healthy()

    def _pick(self) -> _Host | None:
        self._require_healthy()
        free = [h for h in self._hosts if h.down is None and h.busy < h.cap]
        return min(free, key=lambda h: (h.busy / h.cap, h.served)) if free else None

    async def _recheck(self, h: _Host, error: BaseException) -> None:
        image = self.config.effective_image or ""
        reason = await asyncio.to_thread(check_host, h.host, image, ())
        if reason is not None:
            self._take_out(h, f"{reason} (an execution there failed: {type(error).__name__})")

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Sandbox]:
        """Lend a sandbox of the least loaded healthy host."""
        if self._closed:
            raise SandboxError(f"pool {self.name} is closed")
        await self.check()
        async with self._cond:
            await self._cond.wait_for(lambda: self._pick() is not None)
            h = self._pick()
            assert h is not None
            h.busy += 1
            h.served += 1
        try:
            async with h.pool.acquire() as sb:
                yield sb
        except SandboxError as e:
            await self._recheck(h, e)
            raise
        finally:
            async with self._cond:
                h.busy -= 1
                self._cond.notify_all()

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(h.pool.close() for h in self._hosts), return_exceptions=True)


def make_pool(config: SandboxPoolConfig) -> SandboxPool | MultiHostPool:
    """A pool for ``config``: over its ``docker_hosts`` when it lists some."""
    return MultiHostPool(config) if config.docker_hosts else SandboxPool(config)
