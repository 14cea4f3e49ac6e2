"""Few-shot selection: curated examples first, then a seeded draw that excludes the instance.

The pool (a task's few-shot split, thousands of rows for MMLU) is indexed once per pool object
(`_PoolIndex`: rows by cluster, query counts, memoized fixed draws), so choosing shots costs O(k)
per instance for fixed sets instead of several scans of the pool: a cached 5-shot MMLU re-run
spent 3 of its 4 s here. The choices are exactly those of the plain scans (tests/test_tasks_core.py
compares them).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from engine.tasks.instance import Instance

_ALL = object()  # the group key of the whole pool
_MAX_INDEXES = 16  # pools indexed at once (one per task in a run); the oldest is dropped


class _PoolIndex:
    def __init__(self, pool: Sequence[Instance]):
        self.pool = pool
        self.groups: dict[object, list[Instance]] = {_ALL: list(pool)}
        for p in pool:
            if p.cluster is not None:
                self.groups.setdefault(p.cluster, []).append(p)
        self.queries = {key: Counter(p.query for p in rows) for key, rows in self.groups.items()}
        self.draws: dict[tuple, list[Instance]] = {}

    def count(self, group: object, taken: set[str]) -> int:
        """Rows of the group whose query is not taken."""
        rows, queries = self.groups.get(group, []), self.queries.get(group, Counter())
        return len(rows) - sum(queries[q] for q in taken)

    def without(self, group: object, taken: set[str]) -> list[Instance]:
        return [p for p in self.groups.get(group, []) if p.query not in taken]

    def fixed_draw(self, seed: int, same_cluster: bool, cluster: str | None, chosen: frozenset[str],
                   need: int) -> list[Instance]:
        """The draw a fixed set makes (the same for every instance of a cluster), memoized."""
        key = (seed, same_cluster, cluster, chosen, need)
        if key not in self.draws:
            base = self.without(_ALL, set(chosen))
            if same_cluster and cluster is not None:
                base = [p for p in base if p.cluster == cluster] or base
            rng = random.Random(f"{seed}:{cluster}" if same_cluster else seed)
            self.draws[key] = rng.sample(base, min(need + 1, len(base)))
        return self.draws[key]


_INDEXES: dict[int, _PoolIndex] = {}


def _index(pool: Sequence[Instance]) -> _PoolIndex:
    found = _INDEXES.get(id(pool))
    if found is None or found.pool is not pool or len(found.groups[_ALL]) != len(pool):
        found = _INDEXES[id(pool)] = _PoolIndex(pool)
        while len(_INDEXES) > _MAX_INDEXES:
            _INDEXES.pop(next(iter(_INDEXES)))
    return found


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
    index = _index(pool)
    # ids are row indices, so they repeat across splits: the instance is excluded by its query
    taken = {c.query for c in chosen} | {instance.query}
    want = k - len(chosen)
    group: object = _ALL
    if same_cluster and instance.cluster is not None and index.count(instance.cluster, taken) >= want:
        group = instance.cluster
    need = min(want, index.count(group, taken))
    if fixed:
        drawn = index.fixed_draw(seed, same_cluster, instance.cluster, frozenset(c.query for c in chosen), need)
        return chosen + [p for p in drawn if p.query != instance.query][:need]
    rng = random.Random(f"{seed}:{instance.id}")
    return chosen + rng.sample(index.without(group, taken), need)
