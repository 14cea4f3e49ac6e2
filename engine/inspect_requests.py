"""`inspect=true`: print the exact rendered requests, calling no model.

With a tool-using harness it prints what the agent is sent: the protocol, the system prompt, the
tool schemas and the first request of each shown instance, rendered as the provider renders it.
"""

from __future__ import annotations

import json
from typing import Any

from engine.config.schema import Experiment
from engine.config.suites import expand_experiment
from engine.external.run import external_command
from engine.harness.agent_report import uses_tools
from engine.harness.build import build_scaffold
from engine.harness.scaffolds import ToolLoop
from engine.models import resolve_model_dir, with_tool_model
from engine.runner.task_run import prepare
from engine.types import GenerateRequest, ModelIdentity


def _tokenizer(exp: Experiment):
    if exp.model.provider != "hf":
        return None
    from transformers import AutoTokenizer  # deferred: ~2 s, only for an hf model

    return AutoTokenizer.from_pretrained(resolve_model_dir(with_tool_model(exp.model)))


class _Shape:
    """What choosing a protocol reads of a provider (its kind and tokenizer), without loading weights."""

    def __init__(self, exp: Experiment, tok: Any):
        self.identity = ModelIdentity(name=exp.model.name, provider=exp.model.provider)
        if tok is not None:
            self.tokenizer = tok


def _agent_header(scaffold: ToolLoop, first: GenerateRequest) -> list[str]:
    system = [m.content for m in first.messages or () if m.role == "system"]
    return [f"[agent] scaffold {scaffold.name}, protocol {scaffold.protocol}, tools {', '.join(scaffold.tools)}",
            f"[system prompt]\n{system[0] if system else '(none)'}",
            f"[tool schemas] {'sent as request.tools' if first.tools else 'described in the system prompt (text protocol)'}\n"
            + "\n".join(json.dumps(s) for s in scaffold.schemas)]


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
        scaffold = build_scaffold(exp.harness, _Shape(exp, tok)) if uses_tools(exp.harness, run.task.formulation) else None  # type: ignore[arg-type]
        out.append(f"=== {run.spec}  (task hash {task.task_hash}, formulation {run.task.formulation}, "
                   f"normalization {run.task.scoring.normalization}, {run.task.prompt.num_fewshot}-shot)")
        for n, inst in enumerate(instances[: exp.limit or limit]):
            req = task.build_request(inst)
            out.append(f"--- instance {inst.id}  gold={inst.gold!r}")
            if isinstance(req, GenerateRequest):
                if scaffold is not None:  # the agent's first request, exactly as the tool loop sends it
                    req = scaffold.first_request(req)
                    if n == 0:
                        out.extend(_agent_header(scaffold, req))
                text = req.render_text()
                if tok is not None and req.messages is not None:
                    text = tok.apply_chat_template([m.model_dump(exclude_none=True) for m in req.messages],
                                                   tools=list(req.tools) or None, tokenize=False,
                                                   add_generation_prompt=True)
                elif req.tools:
                    text += "\n[tools] " + json.dumps(list(req.tools))
                out.append(f"[{'first request' if scaffold else 'prompt'}, {count(text)} {unit}]\n{text}")
                out.append(f"[sampling] {req.sampling.model_dump()}")
            else:
                out.append(f"[context, {count(req.context)} {unit}]\n{req.context}")
                for c in req.continuations:
                    out.append(f"[continuation, {count(c)} {unit}] {c!r}")
                if req.unconditional_context:
                    out.append(f"[unconditional context] {req.unconditional_context!r}")
    return "\n".join(out)
