"""Per-instance scorers for choice and generation tasks."""

from __future__ import annotations

import math
import re
import string

from engine.config.schema import TaskConfig
from engine.models.requests import GenerateResponse, LoglikelihoodResponse
from engine.tasks.extract import extract_answer, normalize_number
from engine.tasks.formulations import continuations
from engine.tasks.instance import Instance


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def normalized_scores(cfg: TaskConfig, inst: Instance, resp: LoglikelihoodResponse, how: str) -> list[float]:
    lps = list(resp.logprobs)
    if how == "per_token":
        return [lp / max(n, 1) for lp, n in zip(lps, resp.token_counts, strict=True)]
    if how == "per_char":
        conts = continuations(cfg, inst)
        return [lp / max(len(c), 1) for lp, c in zip(lps, conts, strict=True)]
    if how == "uncond":
        if resp.unconditional_logprobs is None:
            raise ValueError("uncond normalization needs unconditional logprobs")
        return [lp - u for lp, u in zip(lps, resp.unconditional_logprobs, strict=True)]
    return lps


def score_choice(cfg: TaskConfig, inst: Instance, resp: LoglikelihoodResponse) -> tuple[dict[str, float], int]:
    """acc under the task's normalization (plus the other cheap ones), and bpb of the gold."""
    gold = int(inst.gold)  # type: ignore[arg-type]
    how = cfg.normalization if cfg.formulation != "mc" else "none"
    pred = _argmax(normalized_scores(cfg, inst, resp, how))
    scores = {"acc": float(pred == gold)}
    if cfg.formulation in ("rc", "bpb"):
        for extra in ("none", "per_token", "per_char"):
            scores[f"acc_{extra}"] = float(_argmax(normalized_scores(cfg, inst, resp, extra)) == gold)
        gold_text = continuations(cfg, inst)[gold]
        n_bytes = max(len(gold_text.encode("utf-8")), 1)
        scores["bpb"] = -resp.logprobs[gold] / (n_bytes * math.log(2))
    return scores, pred


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def score_generation(cfg: TaskConfig, inst: Instance, resp: GenerateResponse) -> tuple[dict[str, float], str | None]:
    extracted = extract_answer(cfg.extract, resp.text)
    gold = inst.gold_text or ""
    if cfg.extract in ("gsm8k", "last_number"):
        gold_norm = normalize_number(gold)
        match = extracted is not None and extracted == gold_norm
    else:
        match = extracted is not None and normalize_text(extracted) == normalize_text(gold)
    scores = {"exact_match": float(match)}
    if "contains" in cfg.scorers:
        scores["contains"] = float(bool(gold) and normalize_text(gold) in normalize_text(resp.text))
    return scores, extracted
