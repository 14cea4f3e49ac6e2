"""Before a run: every sandbox pool it will use can start a sandbox, or exit 2 before any compute.

The runner calls ``check_pools`` before it builds the model (docs/architecture.md, "Sandboxes"):
a run whose docker daemon is down, whose socket is missing or whose bubblewrap does not work
would otherwise generate every completion and then fail to score a single one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from engine.config.errors import ConfigError
from engine.sandbox.health import pool_unavailable_reason
from engine.sandbox.models import Capability, SandboxPoolConfig, normalize_requires
from engine.sandbox.planner import NoPoolError, route

_FIX = {
    "docker": ("start the Docker daemon (`bash scripts/ci/setup_sandboxes.sh` starts dockerd and builds the "
               "sandbox image), point the pool at a running one (DOCKER_HOST=URL, or `+harness/sandboxes=docker_hosts "
               "'harness.sandboxes.0.docker_hosts=[URL]'`), or run the sandboxes on another backend: `+harness/sandboxes=bwrap` (or "
               "`+harness/sandboxes=local` for trusted code)"),
    "bwrap": ("install bubblewrap and allow unprivileged user namespaces (`bash scripts/ci/setup_sandboxes.sh`), "
              "or run the sandboxes on another backend: `+harness/sandboxes=docker` (or "
              "`+harness/sandboxes=local` for trusted code)"),
}


class SandboxNeed(BaseModel):
    """What a run will execute in a sandbox, and why (named in the refusal)."""

    model_config = ConfigDict(frozen=True)

    purpose: str  # e.g. "task humaneval scores its completions by execution"
    requires: frozenset[Capability]


def need(purpose: str, requires: Iterable[str] | str | None) -> SandboxNeed:
    return SandboxNeed(purpose=purpose, requires=normalize_requires(requires))


def _no_pool(n: SandboxNeed, pools: Sequence[SandboxPoolConfig], err: NoPoolError) -> ConfigError:
    return ConfigError(
        f"The {n.purpose} in a sandbox providing {sorted(n.requires)}, and no sandbox pool of the harness "
        f"provides it ({err}). Nothing was computed. Fix: add a pool that provides it to `harness.sandboxes` "
        "(e.g. `+harness/sandboxes=bwrap`)."
    )


def _unusable(purposes: list[str], pool: SandboxPoolConfig, reason: str) -> ConfigError:
    return ConfigError(
        f"Sandbox pool '{pool.name}' (backend {pool.backend}) cannot start a sandbox: {reason}. The "
        f"{' and the '.join(purposes)} there, so the run stopped before loading the model or making any "
        f"model call. Fix: {_FIX[pool.backend]}."
    )


def pool_purposes(pools: Sequence[SandboxPoolConfig], needs: Iterable[SandboxNeed]) -> dict[str, list[str]]:
    """Pool name → what the run executes there, for the pools some need routes to (ConfigError when a
    need has no pool)."""
    purposes: dict[str, list[str]] = {}
    for n in needs:
        if not n.requires:
            continue
        try:
            target = route(pools, n.requires)
        except NoPoolError as err:
            raise _no_pool(n, pools, err) from None
        if target is not None and n.purpose not in purposes.setdefault(target.name, []):
            purposes[target.name].append(n.purpose)
    return purposes


async def check_pools(pools: Sequence[SandboxPoolConfig], needs: Iterable[SandboxNeed]) -> None:
    """Raise ``ConfigError`` (exit 2) naming the pool, its backend, the cause and the fix when a
    pool some need routes to cannot start a sandbox. Each pool is probed once, concurrently."""
    purposes = pool_purposes(pools, needs)
    used = [p for p in pools if p.name in purposes]
    reasons = await asyncio.gather(*(pool_unavailable_reason(p) for p in used))
    for pool, reason in zip(used, reasons, strict=True):
        if reason is not None:
            raise _unusable(purposes[pool.name], pool, reason)
