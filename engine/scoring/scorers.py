"""Per-instance scorers for choice and generation tasks."""

from __future__ import annotations

import math
import re
import string

from engine.config import names
from engine.config.schema import TaskConfig
from engine.scoring.registry import apply_scorers, scorer
from engine.stats import MARGIN_METRIC as MARGIN
from engine.stats import gold_margin
from engine.tasks.extract import extract_answer, normalize_number
from engine.tasks.formulations import bits_per_byte, continuations, gold_continuation
from engine.tasks.instance import Instance
from engine.tasks.task import Task
from engine.types import GenerateResponse, LoglikelihoodResponse, Response


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def normalized_scores(cfg: TaskConfig, inst: Instance, resp: LoglikelihoodResponse, how: str) -> list[float]:
    lps = list(resp.logprobs)
    if how == "per_token":
        return [lp / max(n, 1) for lp, n in zip(lps, resp.token_counts, strict=True)]
    if how == "per_char":
        # Characters of the answer text, without the separator before it (lm-eval's acc_norm).
        conts = [c[len(cfg.prompt.answer_prefix):] if c.startswith(cfg.prompt.answer_prefix) else c for c in continuations(cfg, inst)]
        return [lp / max(len(c), 1) for lp, c in zip(lps, conts, strict=True)]
    if how == "uncond":
        if resp.unconditional_logprobs is None:
            raise ValueError("uncond normalization needs unconditional logprobs")
        return [lp - u for lp, u in zip(lps, resp.unconditional_logprobs, strict=True)]
    return lps


def score_choice(cfg: TaskConfig, inst: Instance, resp: LoglikelihoodResponse) -> tuple[dict[str, float], int | None]:
    """acc under the task's normalization (plus the other cheap ones), and bpb of the gold.

    Formulation bpb: the request holds the gold continuation only; the score is its bpb.
    """
    if cfg.formulation == "bpb":
        return {"bpb": bits_per_byte(resp.logprobs[0], gold_continuation(cfg, inst))}, None
    gold = int(inst.gold)  # type: ignore[arg-type]
    how = cfg.scoring.normalization if cfg.formulation != "mc" else "none"
    ranked = normalized_scores(cfg, inst, resp, how)
    pred = _argmax(ranked)
    scores = {"acc": float(pred == gold)}
    if len(ranked) >= 2 and all(math.isfinite(x) for x in ranked):
        # The continuous companion of acc (docs/architecture.md, "Statistics"): how far the gold choice
        # is ahead of (or behind) the best other one, under the same normalization that ranks them.
        scores[MARGIN] = gold_margin(ranked, gold)
    if cfg.formulation == "rc":
        extras = ["none", "per_token", "per_char"] + (["uncond"] if resp.unconditional_logprobs else [])
        for extra in extras:
            scores[f"acc_{extra}"] = float(_argmax(normalized_scores(cfg, inst, resp, extra)) == gold)
        scores["bpb"] = bits_per_byte(resp.logprobs[gold], continuations(cfg, inst)[gold])
    return scores, pred


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answers(cfg: TaskConfig, inst: Instance) -> list[str]:
    """The gold answer and its aliases (non-empty)."""
    out = [inst.gold_text or ""] + [str(inst.row.get(c) or "") for c in cfg.dataset.fields.aliases]
    return [a for a in out if a.strip()]


def relaxed_match(text: str, answers: list[str]) -> bool:
    """FreshQA-style relaxed match: an acceptable answer occurs in the response (normalized,
    on word boundaries), or the response's number equals a numeric answer."""
    norm = f" {normalize_text(text)} "
    for ans in answers:
        a = normalize_text(ans)
        if a and f" {a} " in norm:
            return True
        num = normalize_number(ans)
        if num.replace(".", "", 1).lstrip("-").isdigit():
            found = [normalize_number(x) for x in re.findall(r"-?[\d,]*\.?\d+", text)]
            if num in found:
                return True
    return False


def score_generation(cfg: TaskConfig, inst: Instance, resp: GenerateResponse) -> tuple[dict[str, float], str | None]:
    extracted = extract_answer(cfg.scoring.extract, resp.text)
    gold = inst.gold_text or ""
    if cfg.scoring.extract in ("gsm8k", "last_number"):
        gold_norm = normalize_number(gold)
        match = extracted is not None and extracted == gold_norm
    else:
        match = extracted is not None and normalize_text(extracted) == normalize_text(gold)
    scores = {"exact_match": float(match)}
    if cfg.dataset.fields.aliases and not match and extracted is not None:
        match = any(normalize_text(extracted) == normalize_text(a) for a in _answers(cfg, inst))
        scores["exact_match"] = float(match)
    return scores, extracted


# What score_choice and score_generation write for every task of a formulation, told to config so that a
# primary metric and a `task.scorers` entry are checked before the run (engine/config/names.py).
names.declare_engine_scores("mc", ["acc"])
names.declare_engine_scores("rc", ["acc", "acc_none", "acc_per_token", "acc_per_char", "bpb"], uncond=["acc_uncond"])
names.declare_engine_scores("bpb", ["bpb"])
names.declare_engine_scores("generate", ["exact_match"])
names.declare_engine_scores(None, [MARGIN])  # beside acc, for every choice task with two or more choices


# The built-in scorers a task names in `scorers:`.
@scorer(name="contains")
def contains_scorer(cfg: TaskConfig, inst: Instance, resp: Response) -> dict[str, float]:
    """1 when the normalized gold answer appears anywhere in the normalized completion."""
    if not isinstance(resp, GenerateResponse):
        return {}
    gold = inst.gold_text or ""
    return {"contains": float(bool(gold) and normalize_text(gold) in normalize_text(resp.text))}


@scorer(name="relaxed_match")
def relaxed_match_scorer(cfg: TaskConfig, inst: Instance, resp: Response) -> dict[str, float]:
    """FreshQA-style relaxed match: 1 when an acceptable answer occurs in the completion (normalized, on word boundaries) or its number equals a numeric answer."""
    if not isinstance(resp, GenerateResponse):
        return {}
    return {"relaxed_match": float(relaxed_match(resp.text, _answers(cfg, inst)))}


@scorer(name="judge")
def judge_scorer(cfg: TaskConfig, inst: Instance, resp: Response) -> dict[str, float]:
    """An LLM judge's verdict (1 correct, 0 not) on the completion against the gold; the judge is `harness.auxiliary.judge`."""
    return {}  # the judge's verdicts come after every response is in (engine/runner/task_run.py apply_judge)


def score_response(task: Task, inst: Instance, response: Response) -> tuple[dict[str, float], object]:
    """(scores, extracted answer) of one response: the task's own scoring, else the standard one;
    then the scorers the task names (`scorers:`, built-in or `@scorer`)."""
    own = task.score(inst, response)
    if own is not None:
        scores, extracted = own
    elif isinstance(response, LoglikelihoodResponse):
        scores, extracted = score_choice(task.config, inst, response)
    else:
        scores, extracted = score_generation(task.config, inst, response)
    named = task.config.scoring.scorers or task.config.scoring.metric_names
    return (apply_scorers(task.config, inst, response, scores) if named else scores), extracted
