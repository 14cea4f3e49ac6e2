"""Which sandbox pools a run will use, checked before any compute (docs/architecture.md, "Sandboxes").

Execution scoring (a task that declares `requires`) and a tool loop's sandboxed tools (python_exec,
bash) open the harness's pools (by default the strongest backend that works here); `check_sandboxes`
checks each of those pools once, before the model is built: a pool that cannot enforce the isolation
it declares is refused unless it accepts that (then one WARNING line says what is not enforced), and
a docker daemon that is down or a bubblewrap that does not work is exit 2 with one paragraph instead
of a crash after every completion was generated.
"""

from __future__ import annotations

import asyncio
import sys

from engine.config.schema import Experiment
from engine.config.suites import TaskRun
from engine.harness.agent_report import uses_tools
from engine.harness.build import needs_router
from engine.harness.tools import Tool, resolve_tools
from engine.sandbox import NoPoolError, harness_pools, pools_from_config, route
from engine.sandbox.isolation import check_isolation, isolation_warning, strongest_backend
from engine.sandbox.models import NETWORK, SandboxPoolConfig
from engine.sandbox.preflight import SandboxNeed, check_pools, need, pool_purposes


def sandbox_needs(exp: Experiment, runs: list[TaskRun], pools: list[SandboxPoolConfig]) -> list[SandboxNeed]:
    """What each run will execute in a sandbox (external evals bring their own container)."""
    h = exp.harness
    out: list[SandboxNeed] = []
    for run in runs:
        task = run.task
        if task.external is not None:
            continue
        if task.scoring.requires:
            out.append(need(f"task {task.name} runs its completions' tests", task.scoring.requires))
        if not uses_tools(h, task.formulation):
            continue
        tools = resolve_tools(h.tools)
        if not needs_router(h, tools):
            continue
        by_pool: dict[str, list[Tool]] = {}
        for tool in tools:
            if not tool.requires - {NETWORK}:
                continue
            try:
                target = route(pools, tool.requires)
            except NoPoolError:
                continue  # the tool is not granted: the model is told so (engine/harness/tools.py)
            if target is not None:
                by_pool.setdefault(target.name, []).append(tool)
        for served in by_pool.values():  # one purpose per pool: "runs its tools python_exec, bash"
            names = ", ".join(t.name for t in served)
            out.append(need(f"harness {h.name} runs its tool{'s' if len(served) > 1 else ''} {names}",
                            frozenset().union(*(t.requires for t in served))))
    return out


# Stands in for the default pool while the needs are routed (capabilities only).
_PROVISIONAL_DEFAULT = SandboxPoolConfig(name="default", backend="local", provides=("python", "bash"))


async def check_sandboxes(exp: Experiment, runs: list[TaskRun]) -> None:
    """ConfigError (exit 2) when a pool the run needs cannot enforce its isolation and does not accept
    that, or cannot start a sandbox; nothing else starts. Prints one WARNING line when a pool the run
    uses does not enforce all it declares (chosen explicitly, or nothing stronger works here)."""
    raw = exp.harness.sandboxes
    # The needs route by capability alone, the same for every backend: the default pool's backend is
    # probed only when something needs a sandbox (and off the event loop: it starts one).
    needs = sandbox_needs(exp, runs, pools_from_config(raw) if raw else [_PROVISIONAL_DEFAULT])
    if not needs:
        return
    if not raw:
        await asyncio.to_thread(strongest_backend)
    pools = harness_pools(raw)
    purposes = pool_purposes(pools, needs)
    check_isolation(pools, purposes, raw)
    await check_pools(pools, needs)
    if warning := isolation_warning(pools, set(purposes)):
        print(warning, file=sys.stderr)
