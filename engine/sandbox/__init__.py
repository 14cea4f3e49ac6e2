"""Sandboxes and capability routing (docs/architecture.md, "Sandboxes").

Capabilities are strings (``python``, ``bash``, ``network``, ``image:<name>``). Pools of
``local``, ``bwrap`` or ``docker`` sandboxes provide them (a harness naming none gets the strongest
backend that works here, ``harness_pools``); ``SandboxRouter`` sends each execution
to the cheapest covering pool, plans and starts pools before a run and tears everything down on
exit, error, SIGINT and SIGTERM. A request that requires nothing never touches a sandbox.
"""

from engine.sandbox.base import InputFilesError, Sandbox, SandboxError, SandboxUnavailableError
from engine.sandbox.isolation import default_pool, harness_pools
from engine.sandbox.models import (
    BASH,
    NETWORK,
    PYTHON,
    Capability,
    Demand,
    ExecResult,
    PoolPlan,
    SandboxLimits,
    SandboxPlan,
    SandboxPoolConfig,
    normalize_requires,
)
from engine.sandbox.planner import NoPoolError, plan, route
from engine.sandbox.router import SandboxRouter, pools_from_config
from engine.sandbox.teardown import teardown_all_sync

__all__ = [
    "BASH", "NETWORK", "PYTHON", "Capability", "Demand", "ExecResult", "InputFilesError",
    "NoPoolError", "PoolPlan",
    "Sandbox", "SandboxError", "SandboxLimits", "SandboxUnavailableError", "SandboxPlan", "SandboxPoolConfig",
    "SandboxRouter", "default_pool", "harness_pools", "normalize_requires", "plan", "pools_from_config", "route",
    "teardown_all_sync",
]
