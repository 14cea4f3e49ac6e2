"""LLM-as-judge: an auxiliary provider grades each response (reference-answer or rubric mode).

Attached to a task by the scorer name ``judge`` (``conf/variant/judge.yaml`` adds it, so
``freshqa:judge`` is judged and no other task is). The judge model, mode and rubric come from
``harness.auxiliary.judge`` (``conf/harness/judge.yaml``); without it the evaluated model judges
itself in reference mode, and the record says so. Per instance the judge's prompt, raw reply,
reasoning and verdict are a ``judge`` trajectory step, and ``scores["judge"]`` is the verdict
(reference: 1 correct / 0 incorrect; rubric: (score - 1) / (scale - 1)). A reply without a
parsable verdict scores 0 with ``verdict: unparsed`` — recorded, never guessed.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.api import ChatMessage, GenerateRequest, InstanceRecord, ProviderError, SamplingParams, TrajectoryStep
from engine.config.schema import ModelConfig

JUDGE_SCORER = "judge"

REFERENCE_PROMPT = """You are grading an answer to a question against a reference answer.

Question: {question}
Reference answer: {reference}
Answer to grade: {response}

Is the answer to grade correct, i.e. does it agree with the reference answer? Explain briefly, then
end with one line: VERDICT: CORRECT or VERDICT: INCORRECT"""

RUBRIC_PROMPT = """You are grading a response with a rubric.

Question: {question}
Response: {response}
Rubric: {rubric}

Explain briefly how well the response meets the rubric, then end with one line: SCORE: N
where N is an integer from 1 (worst) to {scale} (best)."""

DEFAULT_RUBRIC = "The response answers the question correctly, directly and without false statements."


class JudgeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["reference", "rubric"] = "reference"
    rubric: str = DEFAULT_RUBRIC
    scale: int = 5
    model: dict[str, Any] | None = None  # a ModelConfig; None: the evaluated model
    max_tokens: int = 128
    prompt: str | None = None  # override of the mode's template


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    score: float
    verdict: str
    reasoning: str
    raw: str


_REF = re.compile(r"VERDICT\s*[:\-]?\s*\**\s*(CORRECT|INCORRECT)", re.I)
_SCORE = re.compile(r"SCORE\s*[:\-]?\s*\**\s*(\d+)", re.I)


def parse_verdict(text: str, cfg: JudgeConfig) -> Verdict:
    if cfg.mode == "reference":
        found = _REF.findall(text)
        if not found:
            return Verdict(score=0.0, verdict="unparsed", reasoning=text.strip(), raw=text)
        verdict = found[-1].upper()
        reasoning = text[: text.upper().rfind("VERDICT")].strip()
        return Verdict(score=1.0 if verdict == "CORRECT" else 0.0, verdict=verdict.lower(), reasoning=reasoning, raw=text)
    found = _SCORE.findall(text)
    if not found or not 1 <= int(found[-1]) <= cfg.scale:
        return Verdict(score=0.0, verdict="unparsed", reasoning=text.strip(), raw=text)
    n = int(found[-1])
    reasoning = text[: text.upper().rfind("SCORE")].strip()
    return Verdict(score=(n - 1) / max(cfg.scale - 1, 1), verdict=str(n), reasoning=reasoning, raw=text)


def judge_request(cfg: JudgeConfig, question: str, response: str, reference: str | None) -> GenerateRequest:
    template = cfg.prompt or (REFERENCE_PROMPT if cfg.mode == "reference" else RUBRIC_PROMPT)
    prompt = template.format(question=question, response=response or "(no answer)", reference=reference or "",
                             rubric=cfg.rubric, scale=cfg.scale)
    return GenerateRequest(messages=(ChatMessage(role="user", content=prompt),),
                           sampling=SamplingParams(max_tokens=cfg.max_tokens, temperature=0.0))


def judge_config(auxiliary: dict[str, dict[str, Any]]) -> JudgeConfig:
    return JudgeConfig.model_validate(auxiliary.get("judge", {}))


def judge_provider(cfg: JudgeConfig, evaluated: Any, evaluated_cfg: ModelConfig) -> tuple[Any, bool]:
    """(provider, owned): the evaluated model's provider when the judge is the same model."""
    if cfg.model is None:
        return evaluated, False
    mcfg = ModelConfig.model_validate(cfg.model)
    if mcfg == evaluated_cfg:
        return evaluated, False
    from engine.models import build_provider

    return build_provider(mcfg), True


async def apply_judge(records: list[InstanceRecord], queries: dict[str, str], exp: Any, provider: Any,
                      runner: Any) -> list[InstanceRecord]:
    """Add ``scores.judge`` and a ``judge`` step to every record that has an output."""
    from engine.runner.cache import cache_key
    from engine.runner.schedule import WorkItem

    cfg = judge_config(exp.harness.auxiliary)
    judge, owned = judge_provider(cfg, provider, exp.model)
    try:
        items: dict[int, WorkItem] = {}
        for i, r in enumerate(records):
            if r.error is not None or r.output_text is None:
                continue
            req = judge_request(cfg, queries.get(r.instance_id, r.prompt_text or ""), r.output_text,
                                None if r.gold is None else str(r.gold))
            items[i] = WorkItem(key=cache_key(judge.identity, req, "judge", [], 0), request=req)
        t0, started = time.monotonic(), time.time()
        from engine.runner.schedule import Runner

        judge_runner = runner if judge is provider else Runner(judge, exp.harness, runner.cache, progress=runner.progress)
        outcomes = await judge_runner.run(list(items.values()), label="judge") if items else {}
        elapsed = (time.monotonic() - t0) / max(len(items), 1)
        out = list(records)
        for i, item in items.items():
            r, o = records[i], outcomes[item.key]
            content: dict[str, Any] = {"judge_model": judge.identity.label, "mode": cfg.mode,
                                       "prompt": item.request.messages[0].content, "cached": o.cached}
            if o.response is None:
                content.update(error=o.error.model_dump() if o.error else "no response")
                scores = dict(r.scores)
            else:
                v = parse_verdict(o.response.text, cfg)
                content.update(raw=v.raw, reasoning=v.reasoning, verdict=v.verdict, score=v.score)
                scores = {**r.scores, JUDGE_SCORER: v.score}
            tokens = (o.response.usage.prompt_tokens + o.response.usage.completion_tokens) if o.response else None
            step = TrajectoryStep(type="judge", content=content, started=started, duration_s=round(o.latency_s or elapsed, 6),
                                  tokens=tokens)
            out[i] = r.model_copy(update={"scores": scores, "trajectory": [*r.trajectory, step]})
        return out
    finally:
        if owned:
            await judge.aclose()


__all__ = ["JudgeConfig", "Verdict", "apply_judge", "judge_request", "parse_verdict", "ProviderError"]
