"""Exact continuation loglikelihoods, each shared context computed once (docs/architecture.md,
"The loglikelihood path").

Tokenization follows lm-evaluation-harness: trailing whitespace of the context moves to the
continuation, and the continuation tokens are those of (context + continuation) past the
context's tokens. Llama-family models on CPU score on the flat tree forward (hf_tree.py); others,
and the reference the tests compare against, on the padded transformers forward (`_score`): the
context left-padded across a batch of questions, its KV cache replicated across that question's
continuations for a second, batched forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from engine.models.inference.flat_forward import FlatLlama, supports
from engine.models.inference.hf_tree import PrefixCache, Question, chunks, plan, run_chunk
from engine.models.inference.lean_llama import LeanTokenizer, load_flat
from engine.types import (
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    ProviderError,
    TokenLogprobsRequest,
    TokenLogprobsResponse,
    TokenUsage,
)


def encode_pair(tokenizer, context: str, continuation: str, max_length: int) -> tuple[list[int], list[int]]:
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = tokenizer.encode(context, add_special_tokens=False)
    cont = whole[len(ctx) :]
    if not cont:  # the merge swallowed the boundary: fall back to separate encoding
        cont = tokenizer.encode(continuation, add_special_tokens=False)
    # Left truncation as lm-eval does it, `(ctx + cont)[-(max_length + 1):][:-1]`: the model is fed
    # exactly max_length tokens (the continuation's last token is predicted, never fed).
    keep = max_length + 1 - len(cont)
    ctx = ctx[-keep:] if keep > 0 else ctx[-1:]
    if not ctx:  # the first continuation token needs some context to be predicted from
        ctx = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    return ctx, cont


def _CACHE_KWARG(model) -> str:  # transformers 5 renamed `past_key_values` to `cache`
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def left_padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch for the padded transformers forward: token ids left-padded to the longest, the
    attention mask (1 on real tokens) and position ids counting from each row's first real token."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _score(
    model, pad_id: int, contexts: list[list[int]], conts: list[list[list[int]]]
) -> tuple[list[list[float]], list[list[bool]]]:
    """Sum of logprobs and greediness for each question's continuations."""
    device = next(model.parameters()).device
    ids, mask, pos = left_padded(contexts, pad_id)
    # Only the last position's logits are needed here: skipping the rest saves most of the lm_head cost.
    out = model(
        input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=True,
        logits_to_keep=1,
    )
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # predicts each continuation's 1st token
    owner = [i for i, cs in enumerate(conts) for _ in cs]
    flat = [c for cs in conts for c in cs]
    longest = max(len(c) for c in flat)
    rest = None
    if longest > 1:
        cache = out.cache if "cache" in out else out.past_key_values  # renamed in transformers 5
        cache.batch_select_indices(torch.tensor(owner, device=device))
        rows, cont_w = len(flat), longest - 1
        cont_ids = torch.full((rows, cont_w), pad_id, dtype=torch.long)
        cont_mask = torch.zeros((rows, cont_w), dtype=torch.long)
        for r, c in enumerate(flat):
            cont_ids[r, : len(c) - 1] = torch.tensor(c[:-1])
            cont_mask[r, : len(c) - 1] = 1
        full_mask = torch.cat([mask[owner], cont_mask], dim=1)
        cont_pos = torch.tensor([[len(contexts[o]) + t for t in range(cont_w)] for o in owner])
        out2 = model(
            input_ids=cont_ids.to(device),
            attention_mask=full_mask.to(device),
            position_ids=cont_pos.to(device),
            use_cache=True,
            **{_CACHE_KWARG(model): cache},
        )
        rest = torch.log_softmax(out2.logits.float(), dim=-1)
    logprobs: list[list[float]] = [[] for _ in contexts]
    greedy: list[list[bool]] = [[] for _ in contexts]
    for r, (o, c) in enumerate(zip(owner, flat, strict=True)):
        dists = [first[o]] + ([rest[r, t] for t in range(len(c) - 1)] if rest is not None else [])
        total, is_greedy = 0.0, True
        for dist, tok in zip(dists, c, strict=True):
            total += float(dist[tok])
            is_greedy = is_greedy and int(dist.argmax()) == tok
        logprobs[o].append(total)
        greedy[o].append(is_greedy)
    return logprobs, greedy


def flat_scorer(model) -> tuple[FlatLlama | None, PrefixCache]:
    """The flat forward over `model` when it supports it (else None), and an empty prefix cache."""
    return (FlatLlama.from_model(model) if supports(model) else None), PrefixCache()


def lean_scorer(model_dir, dtype: str) -> tuple[FlatLlama, LeanTokenizer, PrefixCache] | None:
    """The flat forward and tokenizer read without transformers (engine/models/inference/lean_llama.py), with
    an empty prefix cache; None when the checkpoint needs transformers."""
    if (flat := load_flat(model_dir, dtype)) is None:  # it checks lean_shape itself
        return None
    return flat, LeanTokenizer(model_dir), PrefixCache()


def _encode(tokenizer, requests: Sequence[LoglikelihoodRequest], max_length: int, unconditional: bool = False
            ) -> list[tuple[list[int], list[list[int]]]]:
    out = []
    for req in requests:
        context = (req.unconditional_context or "") if unconditional else req.context
        pairs = [encode_pair(tokenizer, context, c, max_length) for c in req.continuations]
        # The shared context is the shortest one (left truncation may differ per continuation).
        out.append((min((p[0] for p in pairs), key=len), [p[1] for p in pairs]))
    return out


def _score_tree(flat: FlatLlama, cache: PrefixCache, encoded: list[tuple[list[int], list[list[int]]]],
                token_budget: int) -> tuple[list[list[float]], list[list[bool]]]:
    questions = [Question(context=ctx, continuations=conts) for ctx, conts in encoded]
    plan(questions, cache)
    for chunk in chunks(questions, token_budget):
        run_chunk(flat, chunk, cache)
    return [q.logprobs for q in questions], [q.greedy for q in questions]


@torch.inference_mode()
def loglikelihood_batch(
    model, tokenizer, requests: Sequence[LoglikelihoodRequest], max_length: int,
    flat: FlatLlama | None = None, cache: PrefixCache | None = None, token_budget: int = 4096,
) -> list[LoglikelihoodResponse]:
    """Per request, the summed logprob and greediness of each continuation. With `flat` (a model
    `flat_forward.supports`), the unpadded tree forward with prefix reuse (engine/models/inference/hf_tree.py);
    without, the padded transformers forward with one shared context per question (`_score`)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def score(encoded):
        if flat is not None:
            return _score_tree(flat, cache if cache is not None else PrefixCache(), encoded, token_budget)
        return _score(model, pad_id, [c for c, _ in encoded], [k for _, k in encoded])

    encoded = _encode(tokenizer, requests, max_length)
    logprobs, greedy = score(encoded)
    uncond: list[list[float] | None] = [None] * len(requests)
    need = [i for i, r in enumerate(requests) if r.unconditional_context is not None]
    if need:
        u_lp, _ = score(_encode(tokenizer, [requests[i] for i in need], max_length, unconditional=True))
        for i, lp in zip(need, u_lp, strict=True):
            uncond[i] = lp
    return [
        LoglikelihoodResponse(
            logprobs=tuple(logprobs[i]),
            token_counts=tuple(len(c) for c in encoded[i][1]),
            is_greedy=tuple(greedy[i]),
            unconditional_logprobs=tuple(u) if (u := uncond[i]) is not None else None,
            usage=TokenUsage(prompt_tokens=len(encoded[i][0]) + sum(len(c) for c in encoded[i][1])),
        )
        for i in range(len(requests))
    ]


@torch.inference_mode()
def token_logprobs_batch(
    model, tokenizer, requests: Sequence[TokenLogprobsRequest], max_length: int
) -> list[TokenLogprobsResponse]:
    """Every prompt token's logprob given the tokens before it (one left-padded forward over the
    batch), the best token at each position and the greedy next token: an OpenAI `echo` response.
    The logprob of token t and of the best token at t are read from the same float32 row, so a
    greedy token's two values are equal (lm-eval's `is_greedy` compares them with `==`)."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs: list[list[int]] = []
    for req in requests:
        ids = list(req.tokens) if req.tokens is not None else tokenizer.encode(req.text or "", add_special_tokens=False)
        if not ids:
            raise ProviderError("a token-logprobs prompt is empty", kind="bad_request")
        if len(ids) > max_length:
            raise ProviderError(f"the prompt has {len(ids)} tokens, more than model.max_length={max_length}",
                                kind="context_length")
        seqs.append(ids)
    ids_t, mask, pos = left_padded(seqs, pad_id)
    width = ids_t.shape[1]
    logits = model(input_ids=ids_t.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)).logits
    out = []
    for i, s in enumerate(seqs):
        dist = torch.log_softmax(logits[i, width - len(s) :].float(), dim=-1)  # row t predicts token t+1
        best_lp, best_id = dist.max(dim=-1)
        target = torch.tensor(s[1:], device=dist.device)
        lps = dist[:-1].gather(-1, target[:, None])[:, 0].tolist() if len(s) > 1 else []
        best_ids = best_id.tolist()
        texts = tokenizer.batch_decode([[t] for t in s + best_ids])
        n = len(s)
        out.append(TokenLogprobsResponse(
            tokens=tuple(s),
            text=tokenizer.decode(s),
            token_texts=tuple(texts[:n]),
            logprobs=(None, *lps),
            top_texts=(None, *texts[n : 2 * n - 1]),
            top_logprobs=(None, *best_lp[:-1].tolist()),
            next_token=int(best_ids[-1]),
            next_text=texts[-1],
            next_logprob=float(best_lp[-1]),
            usage=TokenUsage(prompt_tokens=n, completion_tokens=1),
        ))
    return out
