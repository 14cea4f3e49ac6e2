"""Routing and sizing: which pool serves a capability set, and how many sandboxes each starts.

Routing: the cheapest pool whose capabilities cover the request (cost ``local`` 1 < ``bwrap`` 2
< ``docker`` 3 unless a pool sets ``cost``; ties go to the pool listed first). A request that
requires nothing is routed nowhere: it never touches a sandbox.

Sizing: every pool with demand gets one sandbox, then the rest of the budget goes, one sandbox
at a time, to the pool with the most demand per sandbox (D'Hondt), never beyond a pool's
``min(instances, concurrency)`` nor beyond its demand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine.sandbox.models import (
    Capability,
    Demand,
    PoolPlan,
    SandboxPlan,
    SandboxPoolConfig,
    normalize_requires,
)


class NoPoolError(LookupError):
    """No configured pool provides the capabilities an execution requires."""


def route(pools: Sequence[SandboxPoolConfig],
          requires: Iterable[str] | str | None) -> SandboxPoolConfig | None:
    """The cheapest covering pool, None when nothing is required; NoPoolError if none covers."""
    req = normalize_requires(requires)
    if not req:
        return None
    best: SandboxPoolConfig | None = None
    for p in pools:
        if p.covers(req) and (best is None or p.effective_cost < best.effective_cost):
            best = p
    if best is None:
        offered = ", ".join(f"{p.name}({p.backend}: {', '.join(p.provides)})" for p in pools)
        raise NoPoolError(f"no sandbox pool provides {sorted(req)}; pools: {offered or 'none'}")
    return best


def plan(pools: Sequence[SandboxPoolConfig], demands: Iterable[Demand],
         budget: int | None = None) -> SandboxPlan:
    """Size the pools for the expected demand within ``budget`` sandboxes in total.

    ``budget`` None means "each pool up to its own maximum". Capability sets no pool covers are
    returned in ``unrouted`` (the router refuses to start with them).
    """
    per_pool: dict[str, int] = {p.name: 0 for p in pools}
    unrouted: list[frozenset[Capability]] = []
    for d in demands:
        if d.count == 0 or not d.requires:
            continue
        try:
            target = route(pools, d.requires)
        except NoPoolError:
            unrouted.append(d.requires)
            continue
        assert target is not None
        per_pool[target.name] += d.count
    caps = {p.name: min(p.max_size, per_pool[p.name]) for p in pools}
    demanded = [p.name for p in pools if per_pool[p.name] > 0]
    total_cap = sum(caps.values())
    if budget is None:
        budget = total_cap
    sizes = {name: 1 for name in demanded}
    remaining = min(budget, total_cap) - len(demanded)
    while remaining > 0:
        open_pools = [n for n in demanded if sizes[n] < caps[n]]
        if not open_pools:
            break
        best = max(open_pools, key=lambda n: per_pool[n] / (sizes[n] + 1))
        sizes[best] += 1
        remaining -= 1
    return SandboxPlan(
        budget=budget,
        pools=tuple(PoolPlan(pool=p.name, demand=per_pool[p.name], size=sizes.get(p.name, 0))
                    for p in pools),
        unrouted=tuple(dict.fromkeys(unrouted)),
    )
