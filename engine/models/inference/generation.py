"""Generation on the flat forward: shared-prefix reuse and in-flight batching (docs/architecture.md,
"The generation path").

Why: transformers' `generate` pads a batch, so every row waits for the longest one, and it
recomputes every prompt whole: a GSM8K question's 8-shot block, the k samples of one pass@k prompt,
an agent's conversation so far. Here:

- a request's prompt is prefilled on the flat forward (flat_forward.py) after the longest token
  prefix found in a `PrefixCache` (hf_tree.py, keyed on token ids, so reuse is exact: a token's keys
  and values depend only on the tokens before it). Every prompt's keys and values go to the cache,
  and so does a finished row's whole sequence, so an agent's next turn (the same tokens plus the
  tool result) prefills only the new tokens;
- decoding runs over `slots` rows at once, each with its own key/value region in one buffer per
  layer; a finished row leaves at once and a waiting request takes its slot (in-flight batching);
- the next token is chosen as transformers' `generate` chooses it: greedy is the first argmax of the
  float32 logits; sampling applies temperature, top-k 50 and top-p in that order (the warpers
  `generate` builds for `do_sample=True`), then softmax and `torch.multinomial` on the row's own
  generator seeded with the request's seed, which is the stream `torch.manual_seed(seed)` gives
  the plain path for a request alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # the conventional name

from engine.models.inference.flat_forward import FlatLlama, PrefixKV, Segment, _rms, _rope, supports
from engine.models.inference.hf_tree import PrefixCache, _lcp
from engine.models.inference.slots import SlotKV
from engine.types import ProviderError, SamplingParams

TOP_K = 50  # transformers' GenerationConfig default, applied by `generate` whenever it samples
STOP_TAIL = 8  # prompt tokens a stop string may begin in
WAIT_FOR_SHARED = 32  # uncached tokens shared with a prompt of the same round worth a round's wait


@dataclass
class GenJob:
    """One request to complete: its prompt ids (already cut to the context), its sampling, and
    `settle`, called once on the model thread with the outcome (a `GenResult` or an exception)."""

    prompt: Callable[[], list[int]]  # run on the model thread (tokenizing needs the loaded tokenizer)
    sampling: SamplingParams
    settle: Callable[[Any], None]
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class GenResult:
    prompt_tokens: int
    tokens: list[int]  # generated ids, the final eos included
    text: str  # the generated tokens decoded, special tokens skipped, not yet cut at a stop string
    stopped: bool  # a stop string ended in the generated text (it may begin in the prompt)


@dataclass(eq=False)
class _Row:
    job: GenJob
    prompt: list[int]
    generator: torch.Generator | None
    trunk: PrefixKV  # keys and values of positions [0, base): shared by every row with the same tokens there
    generated: list[int] = field(default_factory=list)
    length: int = 0  # positions with keys and values: the trunk's, then the row's slot's

    @property
    def base(self) -> int:
        return len(self.trunk.tokens)


class GenerationEngine:
    """Decodes the jobs handed to `add` on `serve`'s thread (the provider's model thread)."""

    def __init__(self, flat: FlatLlama, decode: Callable[[list[int]], str], eos_ids: set[int], slots: int,
                 cache: PrefixCache):
        self.flat, self.decode, self.eos_ids, self.slots, self.cache = flat, decode, eos_ids, slots, cache
        self.kv = SlotKV(len(flat.layers), slots, flat.n_kv, flat.head_dim, flat.lm_head.dtype)
        self._pending: list[GenJob] = []
        self._rows: list[_Row] = []
        self._lock = threading.Lock()
        self.running = False  # a `serve` is scheduled or under way
        self.prefilled_tokens = 0  # counters for the benchmark and tests
        self.reused_tokens = 0
        self.steps = 0  # decode steps (each one token for every row)

    def add(self, jobs: list[GenJob]) -> bool:
        """Queue jobs; True when the caller must schedule `serve` (none is under way)."""
        with self._lock:
            self._pending.extend(jobs)
            start, self.running = not self.running, True
            return start

    def serve(self) -> None:
        """Run until no job is pending or decoding. A failure settles every job it leaves."""
        # Inference mode: the weights of a transformers model require grad, and without it every step
        # built an autograd graph that the cached keys and values kept alive (GBs within a few requests).
        with torch.inference_mode():
            self._serve()

    def _serve(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._pending and not self._rows:
                        self.running = False
                        return
                    room = self.slots - len(self._rows)
                    admitted, self._pending = self._pending[:room], self._pending[room:]
                if admitted:
                    self._admit(admitted)
                self._drop_cancelled()
                if self._rows:
                    self._step()
        except BaseException as err:
            with self._lock:
                left, self._pending, self.running = [r.job for r in self._rows] + self._pending, [], False
                self._rows = []
            for job in left:
                job.settle(err)
            raise

    def _admit(self, jobs: list[GenJob]) -> None:
        """Prefill the jobs' prompts, choose each one's first token, give each a slot."""
        ready: list[tuple[GenJob, tuple[int, ...]]] = []
        for job in jobs:
            if job.cancel.is_set():
                job.settle(cancelled())
                continue
            try:
                prompt = tuple(job.prompt())
            except Exception as err:  # noqa: BLE001 - this request's own failure (its template), handed to its caller
                job.settle(err)
                continue
            if not prompt:
                job.settle(ProviderError("the prompt has no tokens", kind="bad_request"))
                continue
            ready.append((job, prompt))
        try:
            while ready:
                ready = self._admit_round(ready)
        except BaseException as err:
            # A prefill that failed leaves these jobs in no row and no queue: each is settled with the
            # error (the rows already slotted are settled by `_serve`), never left awaited forever.
            decoding = {id(r.job) for r in self._rows}
            for job, _ in ready:
                if id(job) not in decoding:
                    job.settle(err)
            raise

    def _admit_round(self, ready: list[tuple[GenJob, tuple[int, ...]]]) -> list[tuple[GenJob, tuple[int, ...]]]:
        """One flat forward over the new tokens of several prompts, each after its longest cached
        prefix; jobs with the same prompt (the k samples of pass@k) share one prefill. A prompt that
        shares more uncached tokens with one already in this round waits for the next round, where
        the cache holds them: a few-shot block is computed once, not once per question. Returns the
        jobs left for the next round."""
        same: dict[tuple[int, ...], list[GenJob]] = {}
        for job, prompt in ready:
            same.setdefault(prompt, []).append(job)
        chosen: list[tuple[tuple[int, ...], PrefixKV | None, int]] = []
        later: list[tuple[GenJob, tuple[int, ...]]] = []
        for prompt, group in same.items():
            entry, n = self.cache.best(list(prompt))
            n = min(n, len(prompt) - 1)  # the last prompt token runs: its output predicts the first new token
            if any(_lcp(prompt, other) > n + WAIT_FOR_SHARED for other, _, _ in chosen):
                later += [(job, prompt) for job in group]
                continue
            chosen.append((prompt, entry if n > 0 else None, n))
        ids: list[int] = []
        pos: list[int] = []
        segments: list[Segment] = []
        for prompt, cached, n in chosen:
            new = range(len(ids), len(ids) + len(prompt) - n)
            segments.append(Segment(rows=new, cached=cached, cached_len=n, store=PrefixKV(tokens=prompt)))
            ids += prompt[n:]
            pos += range(n, len(prompt))
            self.prefilled_tokens += len(prompt) - n
            self.reused_tokens += n
        keep = torch.tensor([seg.rows.stop - 1 for seg in segments])
        hidden = self.flat.hidden(torch.tensor(ids), torch.tensor(pos), segments, keep=keep)
        rows: list[_Row] = []
        of_row: list[int] = []
        for i, ((prompt, cached, n), seg) in enumerate(zip(chosen, segments, strict=True)):
            store = seg.store
            assert store is not None
            self.cache.put(store)
            for job in same[prompt]:
                rows.append(self._slot(job, list(prompt), self._trunk(prompt, cached, n, store), store))
                of_row.append(i)
        self._choose(rows, hidden.index_select(0, torch.tensor(of_row)))
        return later

    def _slot(self, job: GenJob, prompt: list[int], trunk: PrefixKV, store: PrefixKV) -> _Row:
        """The job's row, in the next free slot: the prompt's positions past its trunk copied there."""
        seed = job.sampling.seed
        gen = torch.Generator().manual_seed(seed) if job.sampling.temperature > 0 and seed is not None else None
        row = _Row(job=job, prompt=prompt, generator=gen, trunk=trunk, length=len(prompt))
        self.kv.load(len(self._rows), store, row.base, len(prompt))
        self._rows.append(row)
        return row

    def _trunk(self, prompt: tuple[int, ...], cached: PrefixKV | None, n: int, store: PrefixKV) -> PrefixKV:
        """The row's shared positions: the cached prefix it reused (the 8-shot block, a pass@k prompt,
        an agent's conversation so far), the same object as any decoding row's with those tokens, so
        that decode attends to it once for all of them; with no reuse, the row's whole prompt."""
        if cached is None:
            return store
        tokens = prompt[:n]
        for other in self._rows:
            if other.trunk.tokens == tokens:
                return other.trunk
        return PrefixKV(tokens=tokens, keys=[k[:, :n] for k in cached.keys], values=[v[:, :n] for v in cached.values])

    def _drop_cancelled(self) -> None:
        for i in reversed(range(len(self._rows))):
            if self._rows[i].job.cancel.is_set():
                job = self._rows[i].job
                self._leave(i)
                job.settle(cancelled())

    def _step(self) -> None:
        """One token for every row: the flat layers over the rows' last tokens, attention over each
        row's slot (its own length masked), then the choice of each next token."""
        rows = self._rows
        self.steps += 1
        pos = torch.tensor([r.length for r in rows])
        local = pos - torch.tensor([r.base for r in rows])  # the new token's place in its row's slot
        self.kv.reserve(int(local.max()) + 1)
        trunks: dict[int, tuple[PrefixKV, list[int]]] = {}
        for i, r in enumerate(rows):
            trunks.setdefault(id(r.trunk), (r.trunk, []))[1].append(i)
        hidden = self._decode_hidden(torch.tensor([r.generated[-1] for r in rows]), pos, local,
                                     [(t, torch.tensor(idx)) for t, idx in trunks.values()])
        for r in rows:
            r.length += 1
        self._choose(rows, hidden)

    def _decode_hidden(self, ids: torch.Tensor, pos: torch.Tensor, local: torch.Tensor,
                       trunks: list[tuple[PrefixKV, torch.Tensor]]) -> torch.Tensor:
        flat, b = self.flat, len(ids)
        h = F.embedding(ids, flat.embed_weight)
        cos, sin = flat._rope_tables(pos, h)
        half = flat.head_dim // 2
        cos, sin = cos[:, None, :], torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)[:, None, :]
        span = int(local.max()) + 1
        # [b, 1, 1, span]: 0 where a row sees a key of its slot, -inf past its own length
        bias = torch.zeros((b, 1, 1, span)).masked_fill_(
            (torch.arange(span)[None, :] > local[:, None])[:, None, None, :], float("-inf"))
        slot = torch.arange(b)
        for li, layer in enumerate(flat.layers):
            x = _rms(h, layer.w_in, layer.eps)
            q = _rope((x @ layer.w_q.T).view(b, flat.n_heads, flat.head_dim), cos, sin, half)
            k = _rope((x @ layer.w_k.T).view(b, flat.n_kv, flat.head_dim), cos, sin, half)
            v = (x @ layer.w_v.T).view(b, flat.n_kv, flat.head_dim)
            keys, values = self.kv.keys[li], self.kv.values[li]
            keys[slot, :, local] = k
            values[slot, :, local] = v
            att = self._attend(q, keys[:b, :, :span], values[:b, :, :span], bias, trunks, li)
            h = torch.addmm(h, att.reshape(b, -1), layer.w_o.T)
            x = _rms(h, layer.w_post, layer.eps)
            h = torch.addmm(h, F.silu(x @ layer.w_gate.T).mul_(x @ layer.w_up.T), layer.w_down.T)
        return _rms(h, flat.norm, flat.norm_eps)

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                trunks: list[tuple[PrefixKV, torch.Tensor]], li: int) -> torch.Tensor:
        """Each row's attention over its trunk's keys, then its slot's: one softmax over both (the
        maximum and the sum taken across the two parts). Grouped-query by hand: a row's query heads of
        one key head are one batch (the fused kernel's GQA copies keys and values per head, per step);
        a trunk's rows are one batch too, so a shared prefix is read once per step for all of them."""
        flat, b = self.flat, q.shape[0]
        n_kv, group, hd = flat.n_kv, flat.n_heads // flat.n_kv, flat.head_dim
        q4 = q.view(b, n_kv, group, hd)
        scores = torch.matmul(q4, keys.transpose(2, 3)).mul_(flat.scale).add_(bias)  # [b, n_kv, group, span]
        peak = scores.amax(dim=-1)  # [b, n_kv, group]
        shared = []
        for trunk, idx in trunks:
            r = len(idx)
            qg = q4.index_select(0, idx).permute(1, 0, 2, 3).reshape(n_kv, r * group, hd)
            st = torch.matmul(qg, trunk.keys[li].transpose(1, 2)).mul_(flat.scale)  # [n_kv, r·group, P]
            peak[idx] = torch.maximum(peak[idx], st.amax(dim=-1).view(n_kv, r, group).permute(1, 0, 2))
            shared.append(st)
        p = torch.exp(scores.sub_(peak[..., None]))
        out, total = torch.matmul(p, values), p.sum(dim=-1)
        for (trunk, idx), st in zip(trunks, shared, strict=True):
            r = len(idx)
            pt = torch.exp(st.sub_(peak.index_select(0, idx).permute(1, 0, 2).reshape(n_kv, r * group)[..., None]))
            out.index_add_(0, idx, torch.matmul(pt, trunk.values[li]).view(n_kv, r, group, hd).permute(1, 0, 2, 3))
            total.index_add_(0, idx, pt.sum(dim=-1).view(n_kv, r, group).permute(1, 0, 2))
        return out.div_(total[..., None])

    def _choose(self, rows: list[_Row], hidden: torch.Tensor) -> None:
        """Each row's next token from its hidden state; finished rows leave."""
        logits = (hidden @ self.flat.lm_head.T).float()
        greedy = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            s = row.job.sampling
            token = greedy[i] if s.temperature <= 0 else _sample(logits[i : i + 1], s, row.generator)
            row.generated.append(token)
        for i in reversed(range(len(rows))):
            row = rows[i]
            s = row.job.sampling
            stopped = bool(s.stop) and self._stop_ends_here(row)
            if stopped or row.generated[-1] in self.eos_ids or len(row.generated) >= s.max_tokens:
                index = self._rows.index(row)
                result = GenResult(prompt_tokens=len(row.prompt), tokens=list(row.generated),
                                   text=self.decode(row.generated), stopped=stopped)
                self._remember(index)
                self._leave(index)
                row.job.settle(result)

    def _stop_ends_here(self, row: _Row) -> bool:
        """A stop string ends in the generated text. As transformers' stop-string criterion reads the
        sequence's last tokens, prompt included, a stop may begin in the prompt's last tokens (a
        HumanEval prompt ending in a newline, then `def `): the plain path stops there, so this does."""
        tail = row.prompt[-STOP_TAIL:]
        text = self.decode(tail + row.generated)
        start = len(self.decode(tail))
        return any(text.find(stop, max(0, start - len(stop) + 1)) >= 0 for stop in row.job.sampling.stop)

    def _remember(self, index: int) -> None:
        """A finished row's prompt and generated tokens (all but the last, never fed) go to the
        prefix cache: an agent's next turn extends exactly this sequence."""
        row = self._rows[index]
        tokens = tuple(row.prompt + row.generated[:-1])
        if len(tokens) > len(row.prompt):
            self.cache.put(self.kv.snapshot(index, row.trunk, tokens))

    def _leave(self, index: int) -> None:
        last = len(self._rows) - 1
        if index != last:
            self.kv.move(last, index, self._rows[last].length - self._rows[last].base)
            self._rows[index] = self._rows[last]
        self._rows.pop()


def cancelled() -> ProviderError:
    return ProviderError("the generation was cancelled", kind="cancelled")  # nobody awaits it any more


def _sample(logits: torch.Tensor, s: SamplingParams, generator: torch.Generator | None) -> int:
    """transformers' `generate(do_sample=True)` for one row: temperature, top-k 50, top-p, softmax,
    multinomial (the warpers and their order as `generate` builds them)."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper  # deferred: heavy

    scores = logits
    if s.temperature != 1.0:
        scores = TemperatureLogitsWarper(s.temperature)(None, scores)
    scores = TopKLogitsWarper(TOP_K)(None, scores)
    if s.top_p < 1.0:
        scores = TopPLogitsWarper(s.top_p)(None, scores)
    probs = F.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, num_samples=1, generator=generator)[0, 0])


def build_engine(model: Any, tokenizer: Any, slots: int, cache_tokens: int = 8192) -> GenerationEngine | None:
    """The engine over a loaded transformers model's own weights, or None when the flat forward
    does not reproduce the model (then the provider keeps transformers' `generate`)."""
    if not supports(model):
        return None
    eos = model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
    return GenerationEngine(FlatLlama.from_model(model), lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                            eos_ids, slots, PrefixCache(cache_tokens))
