"""LLM-as-judge: an auxiliary provider grades each response (reference-answer or rubric mode).

Attached to a task by the scorer name ``judge`` (``conf/variant/judge.yaml`` adds it, so
``freshqa:judge`` is judged and no other task is). The judge model, mode and rubric come from
``harness.auxiliary.judge`` (``conf/harness/judge.yaml``); without it the evaluated model judges
itself in reference mode, and the record says so. Per instance the judge's prompt, raw reply,
reasoning and verdict are a ``judge`` trajectory step, and ``scores["judge"]`` is the verdict
(reference: 1 correct / 0 incorrect; rubric: (score - 1) / (scale - 1)). A reply without a
parsable verdict makes the instance an error of kind ``judge_unparsed`` — recorded, never guessed.
The runner core sends the judge's requests (engine/runner/task_run.py).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.config import names
from engine.types import (
    ChatMessage,
    GenerateRequest,
    GenerateResponse,
    InstanceError,
    InstanceRecord,
    SamplingParams,
    TrajectoryStep,
)

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


names.declare_keys(f"auxiliary.{JUDGE_SCORER}", JudgeConfig.model_fields)  # `harness.auxiliary.judge` (config)


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


def judged(record: InstanceRecord, response: GenerateResponse | None, error: InstanceError | None, cfg: JudgeConfig,
           judge_label: str, prompt: str, cached: bool, started: float, duration_s: float) -> InstanceRecord:
    """The record with the judge's verdict as `scores.judge` and a `judge` step.

    A judge call that failed, or a reply without a parsable verdict, makes the instance an error
    (kind `judge_error` / `judge_unparsed`): shown apart, never a score.
    """
    content: dict[str, Any] = {"judge_model": judge_label, "mode": cfg.mode, "prompt": prompt, "cached": cached}
    scores = dict(record.scores)
    new_error: InstanceError | None = None
    tokens = None
    if response is None:
        content["error"] = error.model_dump() if error else "no response"
        new_error = InstanceError(kind="judge_error", message=f"the judge call failed: {error.message if error else '?'}",
                                  attempts=error.attempts if error else 1)
    else:
        v = parse_verdict(response.text, cfg)
        content.update(raw=v.raw, reasoning=v.reasoning, verdict=v.verdict, score=v.score)
        tokens = response.usage.prompt_tokens + response.usage.completion_tokens
        if v.verdict == "unparsed":
            new_error = InstanceError(kind="judge_unparsed", attempts=1,
                                      message=f"the judge's reply has no parsable verdict: {v.raw[-300:]!r}")
        else:
            scores[JUDGE_SCORER] = v.score
    step = TrajectoryStep(type="judge", content=content, started=started, duration_s=round(duration_s, 6), tokens=tokens)
    update: dict[str, Any] = {"scores": scores, "trajectory": [*record.trajectory, step]}
    if new_error is not None:
        update.update(error=new_error, scores={})
    return record.model_copy(update=update)


__all__ = ["JudgeConfig", "Verdict", "judge_config", "judge_request", "judged", "parse_verdict"]
