"""The flat tree forward (packing, shared-prefix reuse) gives the plain padded path's loglikelihoods
(within 1e-4, identical argmax and greediness) on real rows with the real model, at any batch size."""

from __future__ import annotations

import pytest

from engine.config.compose import compose_task
from engine.models.inference.flat_forward import PrefixKV
from engine.models.inference.hf_tree import MIN_SHARED, PrefixCache, Question, chunks, plan
from engine.tasks import build_task
from engine.types import LoglikelihoodRequest


def _rows(spec: str, n: int, fixed: bool = False) -> list[LoglikelihoodRequest]:
    cfg = compose_task(spec)
    if fixed:
        cfg = cfg.model_copy(update={"fewshot": cfg.prompt.fewshot.model_copy(update={"fixed": True})})
    task = build_task(cfg)
    reqs = [task.build_request(i) for i in task.load_instances()[:n]]
    assert all(isinstance(r, LoglikelihoodRequest) for r in reqs)
    return reqs  # type: ignore[return-value]


def _argmax(xs) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "n", "batch", "fixed"), [
    ("hellaswag:rc", 4, 2, False),     # long continuations: context + 4 continuation branches
    ("mmlu:rc", 4, 4, False),          # cloze answers
    ("mmlu:mc:5shot", 4, 2, True),     # a subject's 5 fixed shots: an in-batch node, then the cache
    ("mmlu:mc", 8, 8, False),          # self-contained contexts: packed into one attention call
])
def test_flat_tree_equals_plain_path(smollm2_provider, spec, n, batch, fixed):
    reqs = _rows(spec, n, fixed)
    if fixed:  # the second call reuses the first call's shared prefix from the cache (and scores PMI)
        reqs = reqs[:2] + [r.model_copy(update={"unconditional_context": "Answer:"}) for r in reqs[:2]]
    smollm2_provider.loglikelihood_sync(reqs[:1])  # loads the model (lean, or transformers') and its flat forward
    assert smollm2_provider._flat is not None or smollm2_provider._lean
    fast = [r for k in range(0, n, batch) for r in smollm2_provider.loglikelihood_sync(reqs[k : k + batch])]
    plain = smollm2_provider.loglikelihood_sync(reqs, plain=True)
    for f, p in zip(fast, plain, strict=True):
        assert f.logprobs == pytest.approx(p.logprobs, abs=1e-4)
        assert _argmax(f.logprobs) == _argmax(p.logprobs)
        assert f.is_greedy == p.is_greedy and f.token_counts == p.token_counts
        if p.unconditional_logprobs is not None:
            assert f.unconditional_logprobs == pytest.approx(p.unconditional_logprobs, abs=1e-4)
    if fixed:  # the five shots' keys and values were kept for the next batches of the subject
        assert max(len(k) for k in smollm2_provider._prefixes.entries) > 200


def test_segments_with_the_same_ancestors_and_similar_lengths_are_packed():
    from engine.models.inference.flat_forward import PrefixKV, Segment, _pack

    a, b, c = Segment(range(0, 10)), Segment(range(10, 19)), Segment(range(19, 22))  # 10, 9, 3 tokens
    kids = [Segment(range(22, 25), parent_rows=(range(0, 10),)), Segment(range(25, 28), parent_rows=(range(0, 10),))]
    other_parent = Segment(range(28, 31), parent_rows=(range(10, 19),))
    kv = PrefixKV(tokens=(1, 2))
    cached = [Segment(range(31, 35), cached=kv, cached_len=2), Segment(range(35, 39), cached=kv, cached_len=2)]
    storing = Segment(range(39, 45), store=PrefixKV(tokens=(3,)))
    packed, rest = _pack([a, b, c, *kids, other_parent, *cached, storing], zero_row=45)
    groups = {tuple(p.rows.tolist()): p for p in packed}
    assert set(groups) == {tuple(range(0, 19)), tuple(range(22, 28)), tuple(range(31, 39))}
    plain = groups[tuple(range(0, 19))]
    assert plain.mask is None and plain.length == 10 and plain.gather.tolist()[19] == 45  # b padded with the zero row
    siblings = groups[tuple(range(22, 28))]
    assert siblings.mask is not None and siblings.mask.shape == (3, 10 + 3)  # the parent's 10 keys, then their own
    assert groups[tuple(range(31, 39))].mask.shape == (4, 2 + 4)
    assert rest == [c, other_parent, storing]  # c is too short to pad to 10; alone; stores its keys


def test_prefix_plan_shares_exact_token_prefixes():
    shared = list(range(100, 100 + 2 * MIN_SHARED))
    qs = [Question(context=shared + [1, 2, 3], continuations=[[7], [8]]),
          Question(context=[5] * 40, continuations=[[7, 8, 9]]),
          Question(context=shared + [4], continuations=[[7]])]
    cache = PrefixCache()
    nodes = plan(qs, cache)
    assert len(nodes) == 1 and nodes[0].tokens == shared
    assert qs[0].node is qs[2].node is nodes[0] and qs[1].node is None
    assert qs[0].cost() == 3 and qs[1].cost() == 40 + 2
    # a budget that splits the node's members: the second reads the node's stored keys
    assert chunks(qs, budget=2 * MIN_SHARED + 4) == [[qs[0], qs[2]], [qs[1]]]
    assert chunks(qs, budget=2 * MIN_SHARED + 3) == [[qs[0]], [qs[2]], [qs[1]]]


def test_cache_hit_never_covers_the_whole_context():
    cache = PrefixCache()
    ctx = list(range(50))
    cache.put(PrefixKV(tokens=tuple(ctx)))
    q = Question(context=ctx, continuations=[[1]])
    plan([q], cache)
    assert q.cached_len == len(ctx) - 1  # the last context token runs: its output predicts the answer


def test_target_logprobs_equal_log_softmax_and_argmax_even_on_ties(monkeypatch):
    """The LM head's shortcuts (reused buffers; argmax only where the target reaches the row's
    maximum) give exactly log_softmax's values and torch's first-maximum argmax, ties included."""
    import torch

    from engine.models.inference import hf_tree
    from engine.models.inference.flat_forward import FlatLlama, LlamaShape

    torch.manual_seed(0)
    vocab, dim = 300, 16
    head = torch.randn(vocab, dim)
    head[7] = head[3]  # tokens 3 and 7 always tie: argmax picks 3, so 7 is never greedy
    flat = FlatLlama([], torch.ones(dim), 1e-5, head, head, LlamaShape(n_heads=1, n_kv=1, head_dim=dim, rope_theta=1e4))
    monkeypatch.setattr(hf_tree, "HEAD_CHUNK", 8)  # several chunks, the last one partial
    for n in (5, 21):  # a larger call after a smaller one: the buffers grow
        hidden = torch.randn(n, dim)
        hidden[:4] = head[3] * 10  # rows whose maximum is the tied pair (3, 7)
        rows = [r for r in range(n) for _ in range(3)]
        dist = torch.log_softmax(hidden @ head.T, dim=-1)
        best = dist.argmax(dim=-1)
        targets = [int(t) for r in range(n) for t in (best[r], 7 if r < 4 else (best[r] + 1) % vocab, 3)]
        lp, greedy = hf_tree._target_logprobs(flat, hidden, rows, targets)
        want = torch.stack([dist[r, t] for r, t in zip(rows, targets, strict=True)]).double()
        assert torch.equal(lp, want)
        assert greedy.tolist() == [int(best[r]) == t for r, t in zip(rows, targets, strict=True)]
        assert greedy[0::3].all() and not greedy[1:12:3].any() and greedy[2:12:3].all()


@pytest.mark.slow
def test_kept_rows_are_the_full_forwards_rows(smollm2_dir):
    """`keep` (the rows the LM head reads) skips the last layer's MLP for every other row, and must
    not change the rows it keeps."""
    import torch

    from engine.models.inference.flat_forward import Segment
    from engine.models.inference.lean_llama import load_flat

    flat = load_flat(smollm2_dir, "float32")
    torch.manual_seed(0)
    ids = torch.randint(100, 20000, (40,))
    pos = torch.cat([torch.arange(25), torch.arange(25, 40)])
    segments = [Segment(range(0, 25)), Segment(range(25, 40), parent_rows=(range(0, 25),))]
    full = flat.hidden(ids, pos, segments)
    keep = torch.tensor([3, 24, 30, 39])
    part = flat.hidden(ids, pos, segments, keep=keep)
    assert part.shape == (4, full.shape[1])
    assert torch.allclose(part, full[keep], atol=1e-5, rtol=0)
    assert not torch.allclose(part, full[keep - 1], atol=1e-3, rtol=0)  # the rows differ: the check can fail
