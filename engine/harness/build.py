"""Binding a harness config to a run: its scaffold, its tools, its sandbox pools, its cache policy.

The runner core drives what this builds (docs/architecture.md, "One execution layer"): a scaffold is
a strategy whose model calls go back to the core; the sandbox pools open only when some trajectory
is not cached, sized from the number of pending trajectories.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from engine.config.schema import HarnessConfig
from engine.harness import openai_agents  # noqa: F401 - registers the scaffold `openai_agents`
from engine.harness.protocol import choose_protocol
from engine.harness.scaffolds import SCAFFOLDS, ToolLoop
from engine.harness.tools import Tool, resolve_tools
from engine.sandbox import Demand, SandboxRouter, default_pool, harness_pools
from engine.types import Provider, stable_hash


def policy_signature(h: HarnessConfig) -> str:
    """The scaffold name plus a hash of everything in the harness that changes a trajectory.

    It fills the `scaffold` slot of the cache key, so changing max_turns, limits, the protocol,
    tool options, the agent prompt or the sandboxes never returns a stale trajectory.
    """
    if h.scaffold == "single_turn":
        return h.scaffold
    # Where code runs can change what it outputs: a harness naming no pool runs on the strongest
    # backend that works here (engine/sandbox/isolation.py), which enters the key by name.
    sandboxes = h.sandboxes or (default_pool().backend if needs_router(h, resolve_tools(h.tools)) else [])
    policy = {"max_turns": h.max_turns, "protocol": h.protocol, "tool_options": h.tool_options,
              "system_prompt": h.system_prompt, "max_total_tokens": h.max_total_tokens,
              "max_time_s": h.max_time_s, "turns_field": h.turns_field if h.scaffold == "multi_turn" else None,
              "sandboxes": sandboxes}
    return f"{h.scaffold}:{stable_hash(policy)[:12]}"


def build_scaffold(h: HarnessConfig, provider: Provider) -> ToolLoop:
    tools = resolve_tools(h.tools)
    protocol = choose_protocol(h.protocol, provider)
    # HF chat templates take tool-call arguments as a mapping; OpenAI-style APIs as a JSON string.
    as_dict = provider.identity.provider == "hf"
    cls = SCAFFOLDS.get(h.scaffold, "`harness.scaffold`")
    return cls(tools, h, protocol, arguments_as_dict=as_dict)


def needs_router(h: HarnessConfig, tools: list[Tool]) -> bool:
    return bool(h.sandboxes) or any(t.requires - {"network"} for t in tools)


def sandbox_resources(h: HarnessConfig) -> Callable[[int], AbstractAsyncContextManager[Any]] | None:
    """For the runner core: open the harness's pools (sized for n trajectories), or None."""
    tools = resolve_tools(h.tools)
    if not needs_router(h, tools):
        return None

    def open_pools(n_trajectories: int) -> AbstractAsyncContextManager[Any]:
        router = SandboxRouter(harness_pools(h.sandboxes))
        demands = [Demand(requires=frozenset(t.requires), instances=n_trajectories, executions=h.max_turns)
                   for t in tools if t.requires and router.covers(t.requires)]  # else: not granted
        router.demands = tuple(demands)
        return router

    return open_pools


def execution_resources(h: HarnessConfig, requires: list[str], instances: int, samples: int
                        ) -> Callable[[int], AbstractAsyncContextManager[Any]]:
    """For execution scoring: the harness's pools (by default the strongest backend here) sized for the task."""

    def open_pools(_: int) -> AbstractAsyncContextManager[Any]:
        demand = Demand(requires=frozenset(requires), instances=instances, samples=max(1, samples), executions=1)
        return SandboxRouter(harness_pools(h.sandboxes), demands=[demand])

    return open_pools
