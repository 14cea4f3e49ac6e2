"""A flat, unpadded forward of a Llama-family model whose attention follows a token tree.

Why (docs/architecture.md, "The loglikelihood path"): on CPU the padded transformers forward of a
small model spends much of its time outside the matrix products (padding, 4-d masks, cache
objects). Here every token of a batch is one row of a [T, hidden] matrix: each layer's matrix
products run over all T rows at once, and only attention looks at the structure. A `Segment` is a
run of query tokens that attends to its ancestors' tokens (a shared context computed once, or keys and values cached from an earlier
batch) and to itself causally, so one forward scores a question's context and all its
continuations, and a few-shot prefix shared by many questions is computed once.

The arithmetic is the transformers Llama forward's (RMSNorm in float32, RoPE from the model's own
rotary module, scaled-dot-product attention); results agree with it to float rounding (~1e-5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # the conventional name

SUPPORTED = {"llama"}  # model_type values whose modules this forward reproduces exactly


@dataclass
class PrefixKV:
    """Keys (after RoPE) and values of a token prefix, per layer: [kv_heads, n, head_dim] each."""

    tokens: tuple[int, ...]
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)


@dataclass
class Segment:
    """Query rows `rows` (contiguous in the flat batch) attend to `cached` (the first `cached_len`
    tokens of a PrefixKV), then to the flat rows `parent_rows`, then causally to themselves."""

    rows: range
    parent_rows: tuple[range, ...] = ()
    cached: PrefixKV | None = None
    cached_len: int = 0
    store: PrefixKV | None = None  # filled with this segment's (and its ancestors') keys and values


def supports(model) -> bool:
    cfg = model.config
    return (
        getattr(cfg, "model_type", None) in SUPPORTED
        and not getattr(cfg, "attention_bias", False)
        and not getattr(cfg, "mlp_bias", False)
        and getattr(cfg, "hidden_act", "silu") == "silu"
        and getattr(cfg, "pretraining_tp", 1) == 1
    )


@dataclass(frozen=True)
class LlamaShape:
    """What the flat forward needs of a Llama config."""

    n_heads: int
    n_kv: int
    head_dim: int
    rope_theta: float


def rope_tables(pos: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, head_dim] of default (unscaled) RoPE, computed as transformers'
    LlamaRotaryEmbedding computes them (the same float32 operations, so the same rounding)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    freqs = pos[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


@dataclass
class LlamaLayer:
    """One decoder layer's weight tensors (a checkpoint's own tensors: never copied, since loaded
    weights are often a memory map whose pages a copy would keep resident twice). Fusing q|k|v and
    gate|up into single matrices measured no faster on CPU and cost a copy (docs/architecture.md)."""

    w_in: torch.Tensor
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    w_o: torch.Tensor
    w_post: torch.Tensor
    w_gate: torch.Tensor
    w_up: torch.Tensor
    w_down: torch.Tensor
    eps: float

    @classmethod
    def of(cls, w: Sequence[torch.Tensor], eps: float) -> LlamaLayer:
        """From the layer's tensors in LAYER_WEIGHTS order."""
        w_in, w_q, w_k, w_v, w_o, w_post, w_gate, w_up, w_down = w
        return cls(w_in, w_q, w_k, w_v, w_o, w_post, w_gate, w_up, w_down, float(eps))


LAYER_WEIGHTS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # LlamaLayer's order


class FlatLlama:
    """The flat forward over one set of Llama weights: a transformers model's own tensors
    (`from_model`), or tensors read straight from safetensors (engine/models/inference/lean_llama.py)."""

    def __init__(self, layers: list[LlamaLayer], norm: torch.Tensor, norm_eps: float, embed: torch.Tensor,
                 lm_head: torch.Tensor, shape: LlamaShape, rotary=None):
        self.layers = layers
        self.norm, self.norm_eps = norm, norm_eps
        self.embed_weight, self.lm_head = embed, lm_head
        self.n_heads, self.n_kv, self.head_dim = shape.n_heads, shape.n_kv, shape.head_dim
        self.rope_theta = shape.rope_theta
        self.scale = self.head_dim**-0.5
        self.rotary = rotary  # the model's rotary module (any RoPE type it implements); None: default RoPE
        self._scratch: dict[str, torch.Tensor] = {}

    @classmethod
    def from_model(cls, model) -> FlatLlama:
        """Over a loaded transformers model's own weight tensors."""
        cfg = model.config
        layers = [LlamaLayer.of([layer.get_submodule(name).weight for name in LAYER_WEIGHTS],
                                layer.input_layernorm.variance_epsilon) for layer in model.model.layers]
        n_heads = cfg.num_attention_heads
        shape = LlamaShape(n_heads=n_heads, n_kv=cfg.num_key_value_heads,
                           head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads, rope_theta=0.0)
        return cls(layers, model.model.norm.weight, model.model.norm.variance_epsilon,
                   model.model.embed_tokens.weight, model.lm_head.weight, shape, rotary=model.model.rotary_emb)

    def scratch(self, name: str, rows: int, cols: int) -> torch.Tensor:
        """A [rows, cols] float buffer kept for reuse. A fresh tensor of this size (the LM head's
        [chunk, vocab] logits, ~50 MB) comes from mmap, so every use pays a page fault per 4 KB page:
        about a third of the head's time (docs/architecture.md, "The loglikelihood path")."""
        buf = self._scratch.get(name)
        if buf is None or buf.numel() < rows * cols:
            buf = self._scratch[name] = torch.empty(rows * cols, dtype=self.lm_head.dtype)
        return buf[: rows * cols].view(rows, cols)

    def _rope_tables(self, pos: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rotary is not None:
            cos, sin = self.rotary(like[None], pos[None])
            return cos[0], sin[0]
        cos, sin = rope_tables(pos, self.head_dim, self.rope_theta)
        return cos.to(like.dtype), sin.to(like.dtype)  # as transformers' rotary module returns them

    def hidden(self, ids: torch.Tensor, pos: torch.Tensor, segments: list[Segment],
               keep: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states of the flat tokens `ids` at positions `pos`: [T, hidden], or
        [len(keep), hidden] for the rows `keep` only (the rows the LM head reads). Every row's keys
        and values are needed in every layer, but after the last layer's attention only the kept
        rows go on: its output projection and MLP skip the rest."""
        t = ids.shape[0]
        # One all-zero row after the T tokens: it stays zero through every layer (no biases; RMSNorm,
        # RoPE and the MLP map 0 to 0), so gathers can point padding at it for free.
        h = torch.cat([F.embedding(ids, self.embed_weight), self.embed_weight.new_zeros((1, self.embed_weight.shape[1]))])
        cos, sin = self._rope_tables(torch.cat([pos, pos.new_zeros(1)]), h)
        half = self.head_dim // 2
        # rotate_half(x) * sin == cat(x2, x1) * cat(-sin1, sin2): the sign moves to the table (exact)
        cos, sin = cos[:, None, :], torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)[:, None, :]
        packed, rest = _pack(segments, t)
        allowed = [_mask(s) for s in rest]
        last = len(self.layers) - 1
        for li, layer in enumerate(self.layers):
            x = _rms(h, layer.w_in, layer.eps)
            q = _rope((x @ layer.w_q.T).view(t + 1, self.n_heads, self.head_dim), cos, sin, half)
            k = _rope((x @ layer.w_k.T).view(t + 1, self.n_kv, self.head_dim), cos, sin, half)
            v = (x @ layer.w_v.T).view(t + 1, self.n_kv, self.head_dim)
            att = torch.zeros((t + 1, self.n_heads, self.head_dim), dtype=h.dtype)
            for group in packed:
                group.attend(q, k, v, att, li, self.scale)
            for seg, allow in zip(rest, allowed, strict=True):
                kk, vv = _keys(k, seg, li), _keys(v, seg, li, values=True)
                if seg.store is not None:  # a copy: a view would keep this layer's whole q|k|v alive
                    seg.store.keys.append(kk.clone())
                    seg.store.values.append(vv.clone())
                rows = slice(seg.rows.start, seg.rows.stop)
                att[rows] = _attend(q[rows], kk, vv, allow, self.scale)
            att2 = att.view(t + 1, -1)
            if li == last and keep is not None:  # from here on, only the rows the LM head reads
                h, att2 = h.index_select(0, keep), att2.index_select(0, keep)
            h = torch.addmm(h, att2, layer.w_o.T)
            x = _rms(h, layer.w_post, layer.eps)
            act = F.silu(x @ layer.w_gate.T).mul_(x @ layer.w_up.T)
            h = torch.addmm(h, act, layer.w_down.T)
        if keep is None:
            h = h[:t]  # the zero row goes
        elif not self.layers:
            h = h.index_select(0, keep)
        return _rms(h, self.norm, self.norm_eps)


@dataclass
class _Packed:
    """Segments with the same ancestors (the same cached prefix and parent rows, or none) and
    similar lengths, padded into one batch [B, L] so one fused attention call serves them all
    instead of a Python loop of small ones. Each query sees every ancestor key, then its own keys
    causally; rows are right-padded with the zero row, which causality hides from every real query,
    and padded queries are never read back."""

    ancestors: Segment | None  # every member's ancestors (a segment of no rows); None: there are none
    gather: torch.Tensor  # [B*L] flat row per padded slot (the zero row for padding)
    slots: torch.Tensor  # the padded slots that are real rows
    rows: torch.Tensor  # their flat rows, in the same order
    b: int
    length: int
    mask: torch.Tensor | None  # [L, ancestors + L], True = attend; None: no ancestors (plain causal)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, att: torch.Tensor, layer: int,
               scale: float) -> None:
        def padded(x: torch.Tensor) -> torch.Tensor:  # [B, heads, L, d]
            return x.index_select(0, self.gather).view(self.b, self.length, x.shape[1], x.shape[2]).transpose(1, 2)

        kk, vv = padded(k), padded(v)
        if self.ancestors is not None:  # the shared ancestors' keys before each member's own
            ak, av = _keys(k, self.ancestors, layer), _keys(v, self.ancestors, layer, values=True)  # [kv, P, d]
            kk = torch.cat([ak.unsqueeze(0).expand(self.b, -1, -1, -1), kk], dim=2)
            vv = torch.cat([av.unsqueeze(0).expand(self.b, -1, -1, -1), vv], dim=2)
        out = F.scaled_dot_product_attention(padded(q), kk, vv, attn_mask=self.mask, is_causal=self.mask is None,
                                             scale=scale, enable_gqa=q.shape[1] != k.shape[1])
        out = out.transpose(1, 2).reshape(self.b * self.length, q.shape[1], q.shape[2])
        att.index_copy_(0, self.rows, out.index_select(0, self.slots))


PACK_MIN_FILL = 0.7  # a packed group's shortest segment is at least this fraction of its longest


def _ancestry(s: Segment) -> tuple:
    cached = s.cached if s.cached is not None and s.cached_len else None
    return id(cached) if cached else None, s.cached_len if cached else 0, tuple((r.start, r.stop) for r in s.parent_rows)


def _pack(segments: list[Segment], zero_row: int) -> tuple[list[_Packed], list[Segment]]:
    """Groups of segments with the same ancestors and similar lengths (padding stays small), and the
    segments left to attend one by one (those that store their keys, and the unmatched)."""
    by_ancestry: dict[tuple, list[Segment]] = {}
    for s in sorted((s for s in segments if s.store is None), key=lambda s: -len(s.rows)):
        by_ancestry.setdefault(_ancestry(s), []).append(s)
    packed: list[_Packed] = []
    taken: set[int] = set()
    for family in by_ancestry.values():
        groups: list[list[Segment]] = []
        for s in family:
            if groups and len(s.rows) >= PACK_MIN_FILL * len(groups[-1][0].rows):
                groups[-1].append(s)
            else:
                groups.append([s])
        for group in groups:
            if len(group) >= 2:
                packed.append(_group(group, zero_row))
                taken.update(id(s) for s in group)
    return packed, [s for s in segments if id(s) not in taken]


def _group(group: list[Segment], zero_row: int) -> _Packed:
    length = len(group[0].rows)
    gather = torch.full((len(group), length), zero_row, dtype=torch.long)
    for b, s in enumerate(group):
        gather[b, : len(s.rows)] = torch.arange(s.rows.start, s.rows.stop)
    flat = gather.view(-1)
    slots = (flat != zero_row).nonzero().view(-1)
    t = group[0]
    cached = t.cached if t.cached is not None and t.cached_len else None
    if cached is None and not t.parent_rows:
        return _Packed(ancestors=None, gather=flat, slots=slots, rows=flat.index_select(0, slots), b=len(group),
                       length=length, mask=None)
    cached_len = t.cached_len if cached else 0
    ancestors = Segment(rows=range(0), parent_rows=t.parent_rows, cached=cached, cached_len=cached_len)
    shape = Segment(rows=range(length), parent_rows=t.parent_rows, cached=cached, cached_len=cached_len)
    return _Packed(ancestors=ancestors, gather=flat, slots=slots, rows=flat.index_select(0, slots), b=len(group),
                   length=length, mask=_mask(shape))


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm: statistics in float32, the weight applied in the input's dtype.
    In float32 that is torch's fused `rms_norm` (bit-identical, faster); a half-precision input is
    upcast as transformers upcasts it."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, x.shape[-1:], weight, eps)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, half: int) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, the sign of rotate_half folded into `sin_signed` (negation is
    exact, so this is transformers' rounding; an `addcmul` here fuses the multiply-add and moved
    loglikelihoods by up to 3e-5)."""
    return x * cos + torch.cat((x[..., half:], x[..., :half]), dim=-1) * sin_signed


def _mask(seg: Segment) -> torch.Tensor:
    """[rows, keys], True = attend: every ancestor token, and the segment's own tokens causally."""
    n = len(seg.rows)
    before = seg.cached_len + sum(len(r) for r in seg.parent_rows)
    own = torch.ones((n, n), dtype=torch.bool).tril()
    return torch.cat([torch.ones((n, before), dtype=torch.bool), own], dim=1)


def _keys(x: torch.Tensor, seg: Segment, layer: int, values: bool = False) -> torch.Tensor:
    """[kv_heads, n_keys, head_dim]: the cached prefix, the parents' rows, the segment's own rows."""
    parts = []
    if seg.cached is not None and seg.cached_len:
        parts.append((seg.cached.values if values else seg.cached.keys)[layer][:, : seg.cached_len])
    parts += [x[r.start : r.stop].transpose(0, 1) for r in (*seg.parent_rows, seg.rows)]
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0].contiguous()


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of q [n, heads, d] over k, v [kv_heads, keys, d] -> [n, heads, d], `allowed` [n, keys]
    True where a query sees a key: torch's fused kernel (grouped-query heads share their keys)."""
    out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k[None], v[None], attn_mask=allowed, scale=scale,
                                         enable_gqa=q.shape[1] != k.shape[0])
    return out[0].transpose(0, 1)
