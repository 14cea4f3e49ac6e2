"""The runner's progress bar: counts questions, but its rate and ETA follow estimated tokens.

Requests are batched longest first (engine/runner/task_run.py `batch_order`), so a bar that counts
items runs slow at the start and fast at the end and its ETA is wrong throughout. Here every item
weighs its estimated tokens (prompt characters / 4, plus the continuations of a loglikelihood
request, with a quadratic attention term; or the `max_tokens` budget of a generation); the bar
advances by weight, so the ETA holds,
and the item count is shown in its label (docs/architecture.md, "The loglikelihood path").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from engine.types import GenerateRequest, LoglikelihoodRequest, TokenLogprobsRequest, WorkRequest

CHARS_PER_TOKEN = 4  # a rough, model-independent estimate: only ratios between items matter
# A prompt of n tokens costs about n * (1 + n / ATTENTION_TOKENS) token-equivalents: attention grows
# with the length. Measured on SmolLM2-135M (CPU): the longest MMLU prompts (~1,500 tokens), scored
# first, cost ~1.4x per token what the short ones cost, and a bar linear in tokens over-predicted
# the default run by 44% at 10% done.
ATTENTION_TOKENS = 4000


def request_chars(req: WorkRequest | None) -> int:
    """The size of a request's prompt (characters; tokens for pre-tokenized prompt scoring): what the
    runner core sorts batches by, longest first."""
    if isinstance(req, GenerateRequest):
        return len(req.render_text())
    if isinstance(req, TokenLogprobsRequest):
        return len(req.tokens) * CHARS_PER_TOKEN if req.tokens is not None else len(req.text or "")
    return len(req.context) if isinstance(req, LoglikelihoodRequest) else 0


def estimated_tokens(request: Any) -> int:
    """The compute weight of one request, in estimated tokens (at least 1)."""
    if isinstance(request, LoglikelihoodRequest):
        n = (request_chars(request) + sum(len(c) for c in request.continuations)) // CHARS_PER_TOKEN
        return max(1, n + n * n // ATTENTION_TOKENS)
    if isinstance(request, GenerateRequest):
        return max(1, request_chars(request) // CHARS_PER_TOKEN + request.sampling.max_tokens)
    return max(1, request_chars(request) // CHARS_PER_TOKEN)


class WorkProgress:
    """A tqdm bar over item weights; `advance(keys)` moves it by those items' weights."""

    def __init__(self, weights: dict[str, int], done: Sequence[str], label: str, enabled: bool):
        self.weights, self.label = weights, label
        self.n_items, self.done_items = len(weights), len(done)
        self.total_weight = sum(weights.values())
        self.done_weight = sum(weights.get(k, 1) for k in done)
        # smoothing=0: the rate is the mean since start, which weights in tokens keep steady
        self.bar = tqdm(total=self.total_weight, initial=self.done_weight, desc=self._desc(), unit="tok",
                        unit_scale=True, smoothing=0, file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                        leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}, {rate_fmt}]")

    def _desc(self) -> str:
        return f"{self.label} {self.done_items}/{self.n_items}".strip()

    def start(self) -> None:
        """Restart the clock once the model is up: loading weights is not part of the rate."""
        if not self.bar.disable:
            self.bar.start_t = self.bar.last_print_t = self.bar._time()

    def advance(self, keys: Sequence[str]) -> None:
        self.done_items += len(keys)
        self.bar.set_description_str(self._desc(), refresh=False)
        step = sum(self.weights.get(k, 1) for k in keys)
        self.done_weight += step
        self.bar.update(step)

    def close(self) -> None:
        self.bar.close()


def item_weights(items: Sequence[Any]) -> dict[str, int]:
    """Weights by key; an item without a request (a job such as an agent trajectory) weighs the mean
    of the requests beside it, or 1 when there are none."""
    known = {it.key: estimated_tokens(it.request) for it in items if it.request is not None}
    mean = max(1, round(sum(known.values()) / len(known))) if known else 1
    return {it.key: known.get(it.key, mean) for it in items}
