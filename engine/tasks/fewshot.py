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
    fixed: bool = False,
) -> list[Instance]:
    """k examples for `instance`, deterministic in (seed, instance id), never the instance itself.

    `fixed`: the drawn examples are the same for every instance (seeded by `seed` alone): one
    draw of k+1 from the whole pool, the instance dropped if it was drawn (OLMES fixed sets).
    """
    if k <= 0:
        return []
    chosen = [c for c in curated if c.query != instance.query][:k]
    if len(chosen) == k:
        return chosen
    taken = {c.query for c in chosen} | {instance.query}
    # ids are row indices, so they repeat across splits: the instance is excluded by its query
    candidates = [p for p in pool if p.query not in taken]
    if same_cluster and instance.cluster is not None:
        in_cluster = [p for p in candidates if p.cluster == instance.cluster]
        if len(in_cluster) >= k - len(chosen):
            candidates = in_cluster
    need = min(k - len(chosen), len(candidates))
    if fixed:
        base = [p for p in pool if p.query not in {c.query for c in chosen}]
        if same_cluster and instance.cluster is not None:
            base = [p for p in base if p.cluster == instance.cluster] or base
        rng = random.Random(f"{seed}:{instance.cluster}" if same_cluster else seed)
        drawn = rng.sample(base, min(need + 1, len(base)))
        return chosen + [p for p in drawn if p.query != instance.query][:need]
    rng = random.Random(f"{seed}:{instance.id}")
    return chosen + rng.sample(candidates, need)
