"""Isolation is declared and enforced (docs/architecture.md, "Sandboxes").

Every pool declares what contains the code it runs (`SandboxPoolConfig.declared_limits`): the host's
files are hidden, and there is no network unless `limits.network: true` grants it. `bwrap` and `docker`
enforce both; `local` (a host process with rlimits) enforces neither (`BACKEND_ENFORCES`). So that
model-written code never runs unisolated without a word:

- a harness that names no pool gets the strongest backend that works on this machine
  (`default_pool`): bwrap, else docker, else local, marked `isolation: best_effort`;
- before any compute, a pool the run uses whose backend cannot enforce a limit it declares is refused
  (`check_isolation`, exit 2 naming the pool, the limit and the fix), unless the pool says
  `limits.isolation: best_effort` (`+harness/sandboxes=local` does: the user chose local for trusted
  code); then the run prints one WARNING line naming what is not enforced (`isolation_warning`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.config.errors import ConfigError
from engine.sandbox.health import pool_unavailable_reason
from engine.sandbox.models import LIMIT_WORDS, BackendName, Isolation, SandboxLimits, SandboxPoolConfig
from engine.sandbox.router import pools_from_config

# Strongest first; both enforce every declared limit. bwrap starts in milliseconds and needs no
# daemon nor image, so it is tried first.
ISOLATING_BACKENDS: tuple[BackendName, ...] = ("bwrap", "docker")
DEFAULT_POOL_NAME = "default"


def _probe(backend: BackendName) -> str | None:
    """None when `backend` can start a sandbox here, else why not. Runs its own event loop."""
    return asyncio.run(pool_unavailable_reason(SandboxPoolConfig(name=f"probe-{backend}", backend=backend)))


@functools.cache
def strongest_backend() -> tuple[BackendName, tuple[str, ...]]:
    """The strongest backend that works on this machine, and why each stronger one does not.

    Probed once per process, in a worker thread (the probes run an event loop of their own, and a
    caller may be inside one): the runner asks first, off its loop (`engine/runner/sandbox_check.py`)."""
    reasons: list[str] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-probe") as pool:
        for backend in ISOLATING_BACKENDS:
            reason = pool.submit(_probe, backend).result()
            if reason is None:
                return backend, tuple(reasons)
            reasons.append(f"{backend}: {reason}")
    return "local", tuple(reasons)


def default_pool() -> SandboxPoolConfig:
    """The pool of a harness that names none: the strongest backend here (local as a last resort)."""
    backend, _ = strongest_backend()
    isolation: Isolation = "best_effort" if backend == "local" else "required"
    return SandboxPoolConfig(name=DEFAULT_POOL_NAME, backend=backend, provides=("python", "bash"), instances=2,
                             limits=SandboxLimits(isolation=isolation))


def harness_pools(raw: Any) -> list[SandboxPoolConfig]:
    """The pools of `harness.sandboxes`, or the default pool when it names none."""
    return pools_from_config(raw) if raw else [default_pool()]


def _unenforced(pool: SandboxPoolConfig) -> str:
    return "; ".join(LIMIT_WORDS[limit] for limit in pool.unenforced_limits)


def check_isolation(pools: Sequence[SandboxPoolConfig], purposes: dict[str, list[str]], raw: Any = None) -> None:
    """ConfigError (exit 2) for the first used pool that cannot enforce a limit it declares and does not
    accept that (`limits.isolation: best_effort`). `purposes`: pool name → what the run executes there;
    `raw`: `harness.sandboxes` as configured (a pool without `limits` needs Hydra's `+` to add one)."""
    for i, pool in enumerate(pools):
        if pool.name not in purposes or not pool.unenforced_limits or pool.limits.isolation == "best_effort":
            continue
        stronger, _ = strongest_backend()
        works = (f"`harness.sandboxes.{i}.backend={stronger}` (it works on this machine) or "
                 f"`+harness/sandboxes={stronger}`") if stronger != "local" else \
            "`+harness/sandboxes=bwrap` or `=docker` (neither works on this machine yet: `bash scripts/ci/setup_sandboxes.sh`)"
        has_limits = isinstance(raw, Sequence) and i < len(raw) and isinstance(raw[i], Mapping) and "limits" in raw[i]
        accept = f"`{'' if has_limits else '+'}harness.sandboxes.{i}.limits.isolation=best_effort`"
        raise ConfigError(
            f"Sandbox pool '{pool.name}' (backend {pool.backend}) cannot enforce limits it declares: "
            f"{_unenforced(pool)}; the {' and the '.join(purposes[pool.name])} there, model-written code that would "
            f"run unisolated. Nothing was computed. Fix: isolate it with {works}; or, for trusted code only, accept "
            f"it with {accept} (what `+harness/sandboxes=local` sets), "
            "and the run prints a WARNING naming what is not enforced."
        )


def isolation_warning(pools: Sequence[SandboxPoolConfig], used: set[str]) -> str | None:
    """One WARNING line naming what the used pools do not enforce, or None when they enforce it all."""
    weak = [p for p in pools if p.name in used and p.unenforced_limits]
    if not weak:
        return None
    parts = []
    for pool in weak:
        why = ""
        if pool.name == DEFAULT_POOL_NAME:
            _, reasons = strongest_backend()
            why = f", no isolating backend works here ({'; '.join(r[:160] for r in reasons)})"
        parts.append(f"sandbox pool '{pool.name}' (backend {pool.backend}{why}): {_unenforced(pool)}")
    return ("WARNING: model-written code runs without isolation: " + " | ".join(parts)
            + ". Use +harness/sandboxes=bwrap or =docker for untrusted code.")
