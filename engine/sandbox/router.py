"""``SandboxRouter``: the harness's one handle on sandboxes.

    pools = pools_from_config(cfg.harness.sandboxes)          # or [SandboxPoolConfig(...), ...]
    async with SandboxRouter(pools, demands=[Demand(requires=["python"], instances=164)],
                             budget=4) as router:
        result = await router.exec(["python"], ["python3", "-c", "print(1)"])

Entering plans the pools from the demand, starts them concurrently and installs SIGINT/SIGTERM
teardown; leaving (normally, on error, on Ctrl-C) stops everything. An atexit hook covers the
rest. Without demands pools start lazily on first use, so a run whose requests require nothing
never starts a sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import ValidationError

from engine.config.errors import format_validation_error
from engine.sandbox._proc import reap_orphaned_uids
from engine.sandbox.base import Command, Files, Sandbox, SandboxError, SandboxUnavailableError
from engine.sandbox.docker_backend import remove_containers
from engine.sandbox.models import (
    Capability,
    Demand,
    DockerHost,
    ExecResult,
    SandboxPlan,
    SandboxPoolConfig,
    normalize_requires,
)
from engine.sandbox.planner import NoPoolError, plan, route
from engine.sandbox.pool import MultiHostPool, SandboxPool, make_pool
from engine.sandbox.teardown import signal_teardown

log = logging.getLogger(__name__)


def pools_from_config(raw: Any) -> list[SandboxPoolConfig]:
    """Pool configs from a list of mappings (YAML/Hydra ``harness.sandboxes``) or models."""
    if raw is None:
        return []
    if isinstance(raw, DictConfig | ListConfig):
        raw = OmegaConf.to_container(raw, resolve=True)
    if isinstance(raw, Mapping):  # {name: {...}} form
        raw = [{"name": k, **dict(v)} for k, v in raw.items()]
    try:
        return [p if isinstance(p, SandboxPoolConfig) else SandboxPoolConfig.model_validate(p) for p in raw]
    except ValidationError as err:  # a known key with a bad value: one paragraph (exit 2), not a traceback
        raise format_validation_error(err, SandboxPoolConfig, "harness.sandboxes") from None


class SandboxRouter:
    """Routes executions to the cheapest covering pool; owns the pools' whole lifecycle."""

    def __init__(self, pools: Sequence[SandboxPoolConfig], *, demands: Iterable[Demand] = (),
                 budget: int | None = None, retries: int = 1) -> None:
        names = [p.name for p in pools]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate sandbox pool names: {names}")
        self.configs = tuple(pools)
        self.demands = tuple(demands)
        self.budget = budget
        self.retries = retries
        self.plan: SandboxPlan | None = None
        self._pools: dict[str, SandboxPool | MultiHostPool] = {}
        self._stack: contextlib.ExitStack | None = None
        self._closed = False

    # -- routing ---------------------------------------------------------------------------
    def route(self, requires: Iterable[str] | str | None) -> SandboxPoolConfig | None:
        """The pool that would serve ``requires`` (None: requires nothing, no sandbox)."""
        return route(self.configs, requires)

    def covers(self, requires: Iterable[str] | str | None) -> bool:
        """Whether some pool serves ``requires`` (which then needs a sandbox): no NoPoolError."""
        try:
            return self.route(requires) is not None
        except NoPoolError:
            return False

    @staticmethod
    def needs_sandbox(requires: Iterable[str] | str | None) -> bool:
        return bool(normalize_requires(requires))

    def pool(self, name: str) -> SandboxPool | MultiHostPool:
        if name not in self._pools:
            if self._closed:
                raise SandboxError("router is closed")
            cfg = next(c for c in self.configs if c.name == name)
            self._pools[name] = make_pool(cfg)
        return self._pools[name]

    @property
    def pools(self) -> Mapping[str, SandboxPool | MultiHostPool]:
        return dict(self._pools)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, demands: Iterable[Demand] | None = None) -> SandboxPlan:
        """Plan from the demand, then start every planned sandbox concurrently."""
        demands = tuple(demands) if demands is not None else self.demands
        self.plan = plan(self.configs, demands, self.budget)
        if self.plan.unrouted:
            raise NoPoolError(f"no sandbox pool provides {[sorted(u) for u in self.plan.unrouted]}"
                              f"; pools: {[c.name for c in self.configs]}")
        await self._reap_leftovers()
        warm = []
        for pp in self.plan.pools:
            if pp.size > 0:
                pool = self.pool(pp.pool)
                pool.resize(pp.size)
                warm.append(pool.warm(pp.size))
        results = await asyncio.gather(*warm, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if any(not isinstance(e, SandboxError) for e in errors):
            await self.close()
            raise next(e for e in errors if not isinstance(e, SandboxError))
        for e in errors:  # a host lost since the pre-flight check: the executions will say so
            log.warning("sandbox pool failed to start all its sandboxes (%s); its executions start "
                        "them on demand or end as errors", e)
        return self.plan

    async def _reap_leftovers(self) -> None:
        """Remove what crashed (SIGKILLed) earlier engines left: processes and containers."""
        assert self.plan is not None
        if not any(pp.size for pp in self.plan.pools):
            return  # the light path: this run starts no sandbox, so it pays nothing
        used = {c.backend for c in self.configs}
        if used & {"local", "bwrap"}:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reap_orphaned_uids)
        # Every docker host of every pool: containers a crashed engine left there too.
        hosts: set[DockerHost | None] = set()
        for c in self.configs:
            if c.backend == "docker":
                hosts.update(c.docker_hosts or [None])
        await asyncio.gather(*(asyncio.to_thread(remove_containers, dead_owners_only=True, host=h)
                               for h in hosts), return_exceptions=True)

    async def close(self) -> None:
        """Stop every sandbox of every pool (idempotent)."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)

    async def __aenter__(self) -> SandboxRouter:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(signal_teardown())
        try:
            await self.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.shield(self.close())
        finally:
            if self._stack is not None:
                self._stack.close()

    # -- execution -------------------------------------------------------------------------
    def _pool_for(self, requires: Iterable[str] | str | None) -> SandboxPool | MultiHostPool:
        cfg = self.route(requires)
        if cfg is None:
            raise ValueError("this execution requires no capability: run it without a sandbox")
        return self.pool(cfg.name)

    @contextlib.asynccontextmanager
    async def session(self, requires: Iterable[Capability] | str) -> AsyncIterator[Sandbox]:
        """An exclusive sandbox for several executions sharing a work dir (e.g. a tool loop)."""
        async with self._pool_for(requires).acquire() as sb:
            yield sb

    async def exec(self, requires: Iterable[Capability] | str, command: Command, *,
                   stdin: str | bytes | None = None, files: Files | None = None,
                   timeout_s: float | None = None) -> ExecResult:
        """Run one command in a fresh work dir of the cheapest pool covering ``requires``.

        Failures of the code (exit codes, timeouts, limits) come back in the ``ExecResult``; a
        failure of the sandbox itself is retried on a fresh sandbox (another host's, when one
        was lost) ``retries`` times, then raised: ``SandboxUnavailableError`` when no host of
        the pool can run anything any more, else ``SandboxError``.
        """
        pool = self._pool_for(requires)
        for attempt in range(self.retries + 1):
            try:
                async with pool.acquire() as sb:
                    result = await sb.exec(command, stdin=stdin, files=files, timeout_s=timeout_s)
                pool.stats.executions += 1
                return result
            except SandboxUnavailableError:
                raise
            except SandboxError as e:
                if attempt >= self.retries:
                    await self._raise_if_unavailable(pool, e)
                    raise
                log.warning("sandbox failure in pool %s (%s); retrying", pool.name, e)
        raise AssertionError("unreachable")

    @staticmethod
    async def _raise_if_unavailable(pool: SandboxPool | MultiHostPool, error: SandboxError) -> None:
        """A failure the retry did not cure: ``SandboxUnavailableError`` when the pool's backend
        or host is gone (the execution did not run), else nothing (one sandbox broke down)."""
        reason = await pool.unavailable_reason()
        if reason is not None:
            backend = pool.config.backend
            raise SandboxUnavailableError(
                f"sandbox pool {pool.name!r} ({backend}) is unavailable: {reason}; the execution did not "
                f"run ({error})") from error

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: p.stats.as_dict() for name, p in self._pools.items()}
