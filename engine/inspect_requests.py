"""`inspect=true`: print the exact rendered requests, calling no model."""

from __future__ import annotations

from engine.api import GenerateRequest
from engine.config.schema import Experiment
from engine.config.suites import expand_experiment
from engine.external.run import external_command
from engine.models import resolve_model_dir
from engine.runner.task_run import prepare


def _tokenizer(exp: Experiment):
    if exp.model.provider != "hf":
        return None
    from transformers import AutoTokenizer  # deferred: ~2 s, only for an hf model

    return AutoTokenizer.from_pretrained(resolve_model_dir(exp.model))


def inspect_experiment(exp: Experiment, limit: int = 2) -> str:
    tok = _tokenizer(exp)
    count = (lambda s: len(tok.encode(s, add_special_tokens=False))) if tok else (lambda s: len(s.split()))
    unit = "tokens" if tok else "words"
    out = []
    for run in expand_experiment(exp):
        if run.task.external is not None:  # an external eval: the benchmark's command, not our requests
            out.append(external_command(run, exp))
            continue
        task, instances = prepare(run, exp.model_copy(update={"limit": exp.limit or limit}))
        out.append(f"=== {run.spec}  (task hash {task.task_hash}, formulation {run.task.formulation}, "
                   f"normalization {run.task.normalization}, {run.task.num_fewshot}-shot)")
        for inst in instances[: exp.limit or limit]:
            req = task.build_request(inst)
            out.append(f"--- instance {inst.id}  gold={inst.gold!r}")
            if isinstance(req, GenerateRequest):
                text = req.render_text()
                if tok is not None and req.messages is not None:
                    text = tok.apply_chat_template([m.model_dump(exclude_none=True) for m in req.messages],
                                                   tokenize=False, add_generation_prompt=True)
                out.append(f"[prompt, {count(text)} {unit}]\n{text}")
                out.append(f"[sampling] {req.sampling.model_dump()}")
            else:
                out.append(f"[context, {count(req.context)} {unit}]\n{req.context}")
                for c in req.continuations:
                    out.append(f"[continuation, {count(c)} {unit}] {c!r}")
                if req.unconditional_context:
                    out.append(f"[unconditional context] {req.unconditional_context!r}")
    return "\n".join(out)
