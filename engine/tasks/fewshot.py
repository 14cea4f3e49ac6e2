"""Few-shot selection: curated examples first, then a seeded draw that excludes the instance."""

from __future__ import annotations

import random
from collections.abc import Sequence

from engine.tasks.instance import Instance


def select_fewshot(
    instance: Instance,
    pool: Sequence[Instance],
    k: int,
    *,
    seed: int,
    curated: Sequence[Instance] = (),
    same_cluster: bool = False,
) -> list[Instance]:
    """k examples for `instance`, deterministic in (seed, instance id), never the instance itself."""
    if k <= 0:
        return []
    chosen = [c for c in curated if c.query != instance.query][:k]
    if len(chosen) == k:
        return chosen
    taken = {c.query for c in chosen} | {instance.query}
    candidates = [p for p in pool if p.id != instance.id and p.query not in taken]
    if same_cluster and instance.cluster is not None:
        in_cluster = [p for p in candidates if p.cluster == instance.cluster]
        if len(in_cluster) >= k - len(chosen):
            candidates = in_cluster
    rng = random.Random(f"{seed}:{instance.id}")
    need = min(k - len(chosen), len(candidates))
    return chosen + rng.sample(candidates, need)
