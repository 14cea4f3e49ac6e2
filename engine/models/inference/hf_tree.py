"""Loglikelihoods on the flat forward (engine/models/inference/flat_forward.py): no padding, no token twice.

One provider call becomes one or more flat forwards of at most `token_budget` new tokens. Each
question is a small tree: its context once, then each continuation (all but its last token)
attending to the context. Contexts of the batch that share a long token prefix (the few-shot block
of a subject) hang under one prefix node computed once; its keys and values go to a small LRU
(`PrefixCache`) so the next batches of the same subject reuse them (the runner plans batches so that
items sharing a prefix are adjacent: engine/runner/task_run.py `batch_order`). Sharing is decided
on token ids, so it is exact: a token's keys and values depend only on the tokens before it.

Scoring is vectorized: the rows that predict continuation tokens go through the LM head in
chunks; each target's logprob and greediness are gathered at once and summed per continuation.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from engine.models.inference.flat_forward import FlatLlama, PrefixKV, Segment

MIN_SHARED = 16  # tokens: a shorter common prefix is recomputed (not worth a tree node)
HEAD_CHUNK = 256  # rows through the LM head at once: bounds the [rows, vocab] logits (~50 MB)


class PrefixCache:
    """Keys and values of recently shared prefixes, least recently used dropped past `max_tokens`."""

    def __init__(self, max_tokens: int = 8192):
        self.max_tokens = max_tokens
        self.entries: OrderedDict[tuple[int, ...], PrefixKV] = OrderedDict()

    def best(self, tokens: list[int]) -> tuple[PrefixKV | None, int]:
        """The entry sharing the longest token prefix with `tokens`, and that length."""
        best, best_len = None, 0
        for key, entry in self.entries.items():
            n = _lcp(key, tokens)
            if n > best_len:
                best, best_len = entry, n
        if best is not None:
            self.entries.move_to_end(best.tokens)
        return best, best_len

    def put(self, entry: PrefixKV) -> None:
        self.entries[entry.tokens] = entry
        self.entries.move_to_end(entry.tokens)
        while sum(len(k) for k in self.entries) > self.max_tokens and len(self.entries) > 1:
            self.entries.popitem(last=False)


@dataclass
class Question:
    context: list[int]
    continuations: list[list[int]]
    cached: PrefixKV | None = None  # from an earlier call or chunk
    cached_len: int = 0
    node: PrefixNode | None = None  # an in-batch shared prefix
    logprobs: list[float] = field(default_factory=list)
    greedy: list[bool] = field(default_factory=list)

    @property
    def start(self) -> int:
        """First context token this question computes itself."""
        return self.node.length if self.node is not None else self.cached_len

    def cost(self) -> int:
        return len(self.context) - self.start + sum(len(c) - 1 for c in self.continuations)


@dataclass
class PrefixNode:
    tokens: list[int]
    cached: PrefixKV | None = None
    cached_len: int = 0
    store: PrefixKV | None = None
    done: bool = False  # computed in an earlier chunk: members read `store` as their cache

    @property
    def length(self) -> int:
        return len(self.tokens)


def _lcp(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan(questions: list[Question], cache: PrefixCache) -> list[PrefixNode]:
    """Attach each question to the cache entry or in-batch prefix node that saves the most tokens."""
    for q in questions:
        entry, n = cache.best(q.context)
        n = min(n, len(q.context) - 1)  # the last context token runs: its output predicts the answer
        if n >= MIN_SHARED:
            q.cached, q.cached_len = entry, n
    order = sorted(range(len(questions)), key=lambda i: questions[i].context)
    nodes: list[PrefixNode] = []
    i = 0
    while i < len(order):
        group, shared = [order[i]], len(questions[order[i]].context) - 1
        j = i + 1
        while j < len(order):
            n = min(shared, _lcp(questions[order[j - 1]].context, questions[order[j]].context),
                    len(questions[order[j]].context) - 1)
            if n < MIN_SHARED:
                break
            group.append(order[j])
            shared = n
            j += 1
        i = j
        members = [questions[k] for k in group if questions[k].cached_len + MIN_SHARED <= shared]
        if len(members) < 2:
            continue
        node = PrefixNode(tokens=questions[group[0]].context[:shared])
        node.store = PrefixKV(tokens=tuple(node.tokens))
        entry, n = cache.best(node.tokens)
        if n >= MIN_SHARED:
            node.cached, node.cached_len = entry, min(n, shared - 1)
        for q in members:
            q.node, q.cached, q.cached_len = node, None, 0
        nodes.append(node)
    return nodes


def chunks(questions: list[Question], budget: int) -> list[list[Question]]:
    """Questions in order (a node's members together, after its first one) in forwards of about
    `budget` new tokens each; a node's members that spill over read its keys from `store`."""
    ordered: list[Question] = []
    seen: set[int] = set()
    for q in questions:
        if q.node is None:
            ordered.append(q)
        elif id(q.node) not in seen:
            seen.add(id(q.node))
            ordered += [p for p in questions if p.node is q.node]
    out: list[list[Question]] = []
    cur: list[Question] = []
    size = 0
    for q in ordered:
        fresh = q.node is not None and all(p.node is not q.node for p in cur)
        if cur and size + q.cost() > budget:
            out.append(cur)
            cur, size, fresh = [], 0, q.node is not None and out[-1][-1].node is not q.node
        cur.append(q)
        size += q.cost() + (q.node.length - q.node.cached_len if fresh and q.node is not None else 0)
    if cur:
        out.append(cur)
    return out


def run_chunk(flat: FlatLlama, chunk: list[Question], cache: PrefixCache) -> None:
    """One flat forward over the chunk; fills each question's logprobs and greediness."""
    ids: list[int] = []
    pos: list[int] = []
    segments: list[Segment] = []
    node_rows: dict[int, range] = {}

    def add(tokens: list[int], first_pos: int) -> range:
        r = range(len(ids), len(ids) + len(tokens))
        ids.extend(tokens)
        pos.extend(range(first_pos, first_pos + len(tokens)))
        return r

    # (row predicting the target, target token, continuation index in the chunk)
    pred_rows: list[int] = []
    targets: list[int] = []
    owners: list[int] = []
    conts: list[Question] = []
    for q in chunk:
        parents: tuple[range, ...] = ()
        cached, cached_len = q.cached, q.cached_len
        node = q.node
        if node is not None and node.done:
            cached, cached_len = node.store, node.length
        elif node is not None:
            if id(node) not in node_rows:
                r = add(node.tokens[node.cached_len :], node.cached_len)
                node_rows[id(node)] = r
                segments.append(Segment(rows=r, cached=node.cached, cached_len=node.cached_len, store=node.store))
            cached, cached_len, parents = node.cached, node.cached_len, (node_rows[id(node)],)
        start = q.start
        ctx_rows = add(q.context[start:], start)
        segments.append(Segment(rows=ctx_rows, parent_rows=parents, cached=cached, cached_len=cached_len))
        for cont in q.continuations:
            k = len(conts)
            conts.append(q)
            if not cont:  # nothing to score: log 1 = 0, greedy
                continue
            rows = [ctx_rows.stop - 1]
            if len(cont) > 1:
                r = add(cont[:-1], len(q.context))
                segments.append(Segment(rows=r, parent_rows=(*parents, ctx_rows), cached=cached, cached_len=cached_len))
                rows += list(r)
            pred_rows += rows
            targets += cont
            owners += [k] * len(cont)
    uniq = sorted(set(pred_rows))  # each distinct row through the LM head once (an MC question's letters share one)
    hidden = flat.hidden(torch.tensor(ids), torch.tensor(pos), segments, keep=torch.tensor(uniq, dtype=torch.long))
    for seg in segments:
        if seg.store is not None:
            cache.put(seg.store)
    for node in {id(q.node): q.node for q in chunk if q.node is not None}.values():
        node.done = True
    where = {r: i for i, r in enumerate(uniq)}
    lp, greedy = _target_logprobs(flat, hidden, [where[r] for r in pred_rows], targets)
    n = len(conts)
    owner_t = torch.tensor(owners)
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, owner_t, lp)
    misses = torch.zeros(n, dtype=torch.long).index_add_(0, owner_t, (~greedy).long())
    for q, s, m in zip(conts, sums.tolist(), misses.tolist(), strict=True):
        q.logprobs.append(s)
        q.greedy.append(m == 0)


def _target_logprobs(flat: FlatLlama, hidden: torch.Tensor, rows: list[int], targets: list[int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(target | hidden[row]) in float64 and whether the target is the row's argmax, per
    (row, target); `hidden` holds each distinct predicting row once."""
    idx = torch.tensor(rows, dtype=torch.long)
    tgt = torch.tensor(targets)
    lp = torch.empty(len(rows), dtype=torch.float64)
    greedy = torch.empty(len(rows), dtype=torch.bool)
    vocab = flat.lm_head.shape[0]
    for lo in range(0, hidden.shape[0], HEAD_CHUNK):
        sel = hidden[lo : lo + HEAD_CHUNK]
        logits = torch.mm(sel, flat.lm_head.T, out=flat.scratch("logits", len(sel), vocab))
        mine = (idx >= lo) & (idx < lo + len(sel))
        local, want = idx[mine] - lo, tgt[mine]
        # torch's log_softmax, as lm-eval and transformers use: its float32 rounding (~1e-5 per token,
        # measured against float64) is then the same on both sides of a comparison.
        dist = torch.log_softmax(logits, dim=-1, out=flat.scratch("logprobs", len(sel), vocab))
        picked = dist[local, want]
        lp[mine] = picked.double()
        # Greedy means the target is torch's argmax (the first maximum). Only a row whose target
        # reaches the row's maximum can be, and only those rows pay for an argmax (amax is ~10x
        # cheaper than argmax over 49k logits).
        hit = picked == dist.amax(dim=-1)[local]
        reach = hit.nonzero().view(-1)
        if len(reach):
            hit[reach] = dist[local[reach]].argmax(dim=-1) == want[reach]
        greedy[mine] = hit
    return lp, greedy
