"""Filter, search, sort and page the question table of a Comparison; per-question detail."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.compare.loading import Question
from engine.compare.models import QuestionPage, QuestionRow
from engine.compare.paired import STATUSES, UNPAIRED, FrozenTable

FILTERS = ("all", "changed", *STATUSES)
SORTS = ("task", "id", "delta", "-delta", "score_a", "-score_a", "score_b", "-score_b")


def prompt_of(sample: dict[str, Any] | None) -> str:
    if not sample:
        return ""
    if sample.get("prompt_text"):
        return str(sample["prompt_text"])
    req = sample.get("request") or {}
    if req.get("messages"):
        return "\n\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in req["messages"])
    for k in ("prompt", "context"):
        if req.get(k):
            return str(req[k])
    return ""


class QueryIndex:
    """A comparison's question table with a lazily built lowercase search corpus."""

    def __init__(self, table: FrozenTable) -> None:
        self.table = table
        self._corpus: list[str] | None = None

    def corpus(self) -> list[str]:
        if self._corpus is None:
            t = self.table
            out = []
            for iid, qa, qb in zip(t.ids, t.qa, t.qb, strict=True):
                parts = [iid]
                for q in (qa, qb):
                    if q is not None:
                        s = q.first
                        parts += [prompt_of(s), str(s.get("gold") or ""), str(s.get("output_text") or ""),
                                  str(s.get("extracted_answer") or "")]
                out.append("\n".join(parts).lower())
            self._corpus = out
        return self._corpus

    def select(self, task: int | None = None, filter: str = "all", q: str = "", sort: str = "task") -> np.ndarray:
        t = self.table
        if filter not in FILTERS:
            raise ValueError(f"unknown filter {filter!r}; one of {', '.join(FILTERS)}")
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")
        mask = np.ones(len(t), dtype=bool)
        if task is not None:
            mask &= t.task_idx == task
        if filter == "changed":
            mask &= (t.status == STATUSES.index("improved")) | (t.status == STATUSES.index("regressed"))
        elif filter != "all":
            mask &= t.status == STATUSES.index(filter)
        idx = np.flatnonzero(mask)
        if q.strip():
            needle = q.strip().lower()
            corpus = self.corpus()
            idx = np.asarray([i for i in idx if needle in corpus[i]], dtype=np.int64)
        if sort == "task" or idx.size == 0:
            return idx
        if sort == "id":
            order = sorted(range(idx.size), key=lambda j: t.ids[idx[j]])
            return idx[np.asarray(order, dtype=np.int64)]
        col = {"delta": t.delta, "score_a": t.score_a, "score_b": t.score_b}[sort.lstrip("-")][idx]
        key = np.where(np.isnan(col), np.inf, -col if sort.startswith("-") else col)  # nan last
        return idx[np.argsort(key, kind="stable")]

    def page(self, idx: np.ndarray, page: int = 1, per_page: int = 50) -> QuestionPage:
        per_page = max(1, min(per_page, 1000))
        total = int(idx.size)
        pages = max(1, math.ceil(total / per_page))
        page = min(max(1, page), pages)
        sel = idx[(page - 1) * per_page : page * per_page]
        return QuestionPage(total=total, page=page, per_page=per_page, pages=pages, rows=[self.row(int(i)) for i in sel])

    def row(self, i: int) -> QuestionRow:
        t = self.table
        q = t.qa[i] or t.qb[i]
        snippet = prompt_of(q.first if q else None)
        return QuestionRow(
            row=i,
            key=f"{t.task_hashes[t.task_idx[i]]}/{t.ids[i]}",
            task_spec=t.task_specs[t.task_idx[i]],
            instance_id=t.ids[i],
            score_a=_num(t.score_a[i]),
            score_b=_num(t.score_b[i]),
            delta=_num(t.delta[i]) if t.status[i] != UNPAIRED else None,
            status=STATUSES[t.status[i]],  # type: ignore[arg-type]
            note=t.notes[i],
            prompt=snippet[:160],
        )

    def detail(self, i: int) -> dict[str, Any]:
        t = self.table
        if not 0 <= i < len(t):
            raise IndexError(i)
        first = (t.qa[i] or t.qb[i]).first  # type: ignore[union-attr]
        return {
            **self.row(i).model_dump(mode="json"),
            "prompt_full": prompt_of(first),
            "gold": first.get("gold"),
            "choices": first.get("choices"),
            "a": _side(t.qa[i]),
            "b": _side(t.qb[i]),
        }


def _num(x: float) -> float | None:
    return None if math.isnan(float(x)) else float(x)


def _side(q: Question | None) -> dict[str, Any] | None:
    if q is None:
        return None
    keep = ("sample_index", "output_text", "extracted_answer", "logprobs", "scores", "error", "trajectory",
            "latency_s", "prompt_tokens", "completion_tokens", "cached", "request_hash")
    return {
        "scores": q.scores,
        "errored": q.errored,
        "prompt": prompt_of(q.first),
        "samples": [{k: s.get(k) for k in keep} for s in q.samples],
    }
