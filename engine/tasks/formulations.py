"""Formulations: how an Instance (plus few-shot examples) becomes a Request.

- mc: choices listed with letters; continuations " A", " B", ...
- rc: cloze; each choice's text is a continuation, scored under the task's normalization.
- bpb: cloze context, the gold continuation only (choice text, or the answer of a generation
  task); the score is bits per byte of that continuation.
- generate: chat messages (few-shot as user/assistant turns) or a plain prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.config.schema import TaskConfig
from engine.config.templates import is_jinja
from engine.tasks.instance import LETTERS, Instance, render_template
from engine.types import ChatMessage, GenerateRequest, LoglikelihoodRequest, Request, SamplingParams


def choice_block(choices: Sequence[str]) -> str:
    return "\n".join(f" {LETTERS[i]}. {c}" for i, c in enumerate(choices))


def prompt_template(cfg: TaskConfig) -> tuple[str, str]:
    """(template, where) of the formulation's prompt."""
    if cfg.formulation == "mc":
        return cfg.prompt.mc_template, "`task.mc_template`"
    if cfg.formulation in ("rc", "bpb"):
        return cfg.prompt.rc_template, "`task.rc_template`"
    return cfg.prompt.generate_template, "`task.generate_template`"


def render_context(cfg: TaskConfig, inst: Instance) -> str:
    template, where = prompt_template(cfg)
    block = choice_block(inst.choices or ())
    if is_jinja(template):  # the variables of engine.config.task_prompt.PROMPT_VARIABLES
        variables = {"query": inst.query, "choices": list(inst.choices or ()), "choice_block": block,
                     "letters": LETTERS, "doc": inst.row}
        return render_template(template, variables, where)
    if cfg.formulation == "mc":
        return template.format(query=inst.query, choices=block)
    return template.format(query=inst.query)


def continuations(cfg: TaskConfig, inst: Instance) -> tuple[str, ...]:
    choices = inst.choices or ()
    if cfg.formulation == "mc":
        return tuple(f"{cfg.prompt.answer_prefix}{LETTERS[i]}" for i in range(len(choices)))
    return tuple(f"{cfg.prompt.answer_prefix}{c}" for c in choices)


def gold_continuation(cfg: TaskConfig, inst: Instance) -> str:
    if inst.choices is not None and isinstance(inst.gold, int):
        return continuations(cfg, inst)[inst.gold]
    return f"{cfg.prompt.answer_prefix}{inst.gold_text or ''}"


def fewshot_answer(cfg: TaskConfig, example: Instance) -> str:
    """The worked answer of a generation example (chain of thought when the data carries it)."""
    if cfg.prompt.chain_of_thought and "cot" in example.row:
        return str(example.row["cot"])
    return example.gold_text or ""


def fewshot_context(cfg: TaskConfig, inst: Instance, shots: Sequence[Instance]) -> str:
    """Few-shot examples (each rendered with its gold continuation), then the instance's context."""
    blocks = [render_context(cfg, s) + gold_continuation(cfg, s) for s in shots]
    return cfg.prompt.fewshot_separator.join(blocks + [render_context(cfg, inst)])


def build_request(cfg: TaskConfig, inst: Instance, shots: Sequence[Instance]) -> Request:
    if cfg.formulation == "generate":
        return _generate_request(cfg, inst, shots)
    context = fewshot_context(cfg, inst, shots)
    if cfg.formulation == "bpb":
        if inst.gold is None:
            raise ValueError(f"task '{cfg.name}' uses formulation bpb but has no `fields.gold`")
        return LoglikelihoodRequest(context=context, continuations=(gold_continuation(cfg, inst),))
    if inst.choices is None:
        raise ValueError(f"task '{cfg.name}' uses formulation {cfg.formulation} but has no `fields.choices`")
    uncond = cfg.formulation == "rc" and cfg.scoring.normalization == "uncond"
    return LoglikelihoodRequest(
        context=context,
        continuations=continuations(cfg, inst),
        unconditional_context=cfg.prompt.unconditional_context if uncond else None,
    )


def _generate_request(cfg: TaskConfig, inst: Instance, shots: Sequence[Instance]) -> GenerateRequest:
    g = cfg.prompt.generation
    sampling = SamplingParams(max_tokens=g.max_tokens, temperature=g.temperature, top_p=g.top_p, stop=tuple(g.stop))
    if not cfg.prompt.chat:
        blocks = [f"{render_context(cfg, s)}{cfg.prompt.answer_prefix}{fewshot_answer(cfg, s)}" for s in shots]
        prompt = cfg.prompt.fewshot_separator.join(blocks + [render_context(cfg, _with_cot_prompt(cfg, inst))])
        return GenerateRequest(prompt=prompt, sampling=sampling)
    messages: list[ChatMessage] = []
    if cfg.prompt.system_prompt:
        messages.append(ChatMessage(role="system", content=cfg.prompt.system_prompt))
    for s in shots:
        messages.append(ChatMessage(role="user", content=render_context(cfg, s)))
        messages.append(ChatMessage(role="assistant", content=fewshot_answer(cfg, s)))
    messages.append(ChatMessage(role="user", content=render_context(cfg, _with_cot_prompt(cfg, inst))))
    return GenerateRequest(messages=tuple(messages), sampling=sampling)


def _with_cot_prompt(cfg: TaskConfig, inst: Instance) -> Instance:
    if cfg.prompt.chain_of_thought and cfg.prompt.cot_prompt:
        return inst.model_copy(update={"query": f"{inst.query} {cfg.prompt.cot_prompt}"})
    return inst


def bits_per_byte(logprob: float, text: str) -> float:
    """-logprob / (bytes * ln 2): the bpb formulation's cost of a continuation per UTF-8 byte."""
    return -logprob / (max(len(text.encode("utf-8")), 1) * math.log(2))
