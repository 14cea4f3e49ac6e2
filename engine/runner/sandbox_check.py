"""Which sandbox pools a run will use, checked before any compute (docs/architecture.md, "Sandboxes").

Execution scoring (a task that declares `requires`) and a tool loop's sandboxed tools (python_exec,
bash) open the harness's pools; `check_sandboxes` probes each of those pools once, before the model
is built, so a docker daemon that is down or a bubblewrap that does not work is exit 2 with one
paragraph instead of a crash after every completion was generated.
"""

from __future__ import annotations

from engine.config.schema import Experiment
from engine.config.suites import TaskRun
from engine.harness.agent_report import uses_tools
from engine.harness.build import needs_router
from engine.harness.tools import Tool, resolve_tools
from engine.sandbox import DEFAULT_POOL, NoPoolError, pools_from_config, route
from engine.sandbox.models import NETWORK, SandboxPoolConfig
from engine.sandbox.preflight import SandboxNeed, check_pools, need


def sandbox_needs(exp: Experiment, runs: list[TaskRun], pools: list[SandboxPoolConfig]) -> list[SandboxNeed]:
    """What each run will execute in a sandbox (external evals bring their own container)."""
    h = exp.harness
    out: list[SandboxNeed] = []
    for run in runs:
        task = run.task
        if task.external is not None:
            continue
        if task.requires:
            out.append(need(f"task {task.name} runs its completions' tests", task.requires))
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


async def check_sandboxes(exp: Experiment, runs: list[TaskRun]) -> None:
    """ConfigError (exit 2) when a pool the run needs cannot start a sandbox; nothing else starts."""
    pools = pools_from_config(exp.harness.sandboxes or [DEFAULT_POOL])
    needs = sandbox_needs(exp, runs, pools)
    if needs:
        await check_pools(pools, needs)
