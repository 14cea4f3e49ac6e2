"""The progress bar advances by estimated tokens, so its ETA holds when the longest prompts run first."""

from __future__ import annotations

from engine.runner.progress import ATTENTION_TOKENS, WorkProgress, estimated_tokens, item_weights
from engine.runner.work import WorkItem
from engine.types import ChatMessage, GenerateRequest, LoglikelihoodRequest, SamplingParams


def _ll(chars: int) -> LoglikelihoodRequest:
    return LoglikelihoodRequest(context="x" * chars, continuations=(" A", " B"))


def test_a_request_weighs_its_estimated_tokens() -> None:
    assert estimated_tokens(_ll(400)) == 101 + 101 * 101 // ATTENTION_TOKENS
    gen = GenerateRequest(messages=(ChatMessage(role="user", content="y" * 80),),
                          sampling=SamplingParams(max_tokens=32))
    assert estimated_tokens(gen) == len(gen.render_text()) // 4 + 32
    assert estimated_tokens(_ll(400)) > estimated_tokens(_ll(40))


def test_long_prompts_weigh_more_per_token_attention_grows_with_length() -> None:
    short, long = estimated_tokens(_ll(400)), estimated_tokens(_ll(6000))  # ~100 and ~1,500 tokens
    assert long / 1501 > 1.3 * short / 101


def test_jobs_weigh_the_mean_of_the_requests_beside_them() -> None:
    items = [WorkItem(key="a", request=_ll(400)), WorkItem(key="b", request=_ll(800)), WorkItem(key="j")]
    w = item_weights(items)
    assert w["a"] == estimated_tokens(_ll(400)) and w["b"] == estimated_tokens(_ll(800))
    assert w["j"] == round((w["a"] + w["b"]) / 2)
    assert item_weights([WorkItem(key="j1"), WorkItem(key="j2")]) == {"j1": 1, "j2": 1}


def test_the_bar_moves_by_weight_and_counts_items() -> None:
    weights = {"long": 900, "short": 100, "cached": 0}
    bar = WorkProgress(weights, ["cached"], "t", enabled=False)
    bar.advance(["long"])  # the first, longest item is 90% of the work, not a third of it
    assert bar.done_weight == 900 and bar.total_weight == 1000
    assert bar.done_items == 2 and bar.n_items == 3
    bar.advance(["short"])
    assert bar.done_weight == bar.total_weight
    bar.close()
