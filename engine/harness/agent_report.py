"""What the model of a tool-using harness actually did, and what it was told.

Every run with a tool loop reports, per run: tool calls per question, the questions without any
tool call, model turns per question, how trajectories ended (answered, max_turns, max_tokens,
max_time, error), calls per tool. A run where no question used a tool gets a warning line: its
score measures the model without tools, not the agent (docs/architecture.md, "Agents that use tools").
"""

from __future__ import annotations

from typing import Any

from engine.config.schema import HarnessConfig
from engine.harness.build import build_scaffold
from engine.harness.scaffolds import LIMIT_KINDS
from engine.types import AgentSummary, GenerateRequest, InstanceRecord, Provider, RunRecord

# The scaffold's end reasons, as reported: a reply without a tool call and a submit both answered.
_END = {"answer": "answered", "submit": "answered"}


def uses_tools(h: HarnessConfig, formulation: str) -> bool:
    """Whether runs of this harness go through a tool loop (generation tasks only)."""
    return h.scaffold != "single_turn" and formulation == "generate"


def _end_reason(r: InstanceRecord) -> str:
    if r.error is not None:  # a limit's cut is an error of the limit's kind, tallied under that limit
        return r.error.kind if r.error.kind in LIMIT_KINDS else "error"
    for step in reversed(r.trajectory):
        reason = step.content.get("end_reason")
        if reason:
            return _END.get(str(reason), str(reason))
    return "answered"


def agent_summary(records: list[InstanceRecord]) -> AgentSummary:
    calls: dict[str, int] = {}
    questions: dict[str, int] = {}
    ends: dict[str, int] = {}
    total_calls = total_turns = without = 0
    for r in records:
        names = [str(s.content.get("name")) for s in r.trajectory if s.type == "tool_call"]
        total_calls += len(names)
        total_turns += sum(1 for s in r.trajectory if s.type == "model")
        without += not names
        for name in names:
            calls[name] = calls.get(name, 0) + 1
        for name in set(names):
            questions[name] = questions.get(name, 0) + 1
        reason = _end_reason(r)
        ends[reason] = ends.get(reason, 0) + 1
    n = len(records)
    return AgentSummary(questions=n, tool_calls_per_question=round(total_calls / n, 4) if n else 0.0,
                        questions_without_tool_call=without,
                        turns_per_question=round(total_turns / n, 4) if n else 0.0,
                        end_reasons=dict(sorted(ends.items())), calls_by_tool=dict(sorted(calls.items())),
                        questions_by_tool=dict(sorted(questions.items())))


def agent_fields(h: HarnessConfig, provider: Provider, records: list[InstanceRecord]) -> dict[str, Any]:
    """RunRecord fields of a tool-loop run: the summary, the protocol, the system prompt and tool
    schemas as the first request carried them."""
    out: dict[str, Any] = {"agent": agent_summary(records)}
    first = next((r.request for r in records if r.request and r.request.get("kind", "generate") == "generate"), None)
    scaffold = build_scaffold(h, provider)
    out["agent_protocol"] = scaffold.protocol
    out["tool_schemas"] = list(scaffold.schemas)
    if first is not None:
        try:
            req = GenerateRequest.model_validate(first)
        except ValueError:
            return out
        system = [m.content for m in scaffold.first_request(req).messages or () if m.role == "system"]
        out["agent_system_prompt"] = system[0] if system else None
    return out


def agent_lines(record: RunRecord) -> list[str]:
    """Lines under the results table: what the agent did; a warning when it never used a tool."""
    a = record.agent
    if a is None:
        return []
    ends = ", ".join(f"{k} {v}" for k, v in a.end_reasons.items())
    by_tool = ", ".join(f"{k} {v}" for k, v in a.questions_by_tool.items()) or "none"
    lines = [f"agent {record.task_spec} ({record.harness}, {record.agent_protocol or '?'} protocol): "
             f"tool calls/question {a.tool_calls_per_question:.2f}, questions without a tool call "
             f"{a.questions_without_tool_call}/{a.questions}, turns/question {a.turns_per_question:.2f}; "
             f"questions calling: {by_tool}; ended: {ends}"]
    if a.questions and a.questions_without_tool_call == a.questions:
        lines.append(f"WARNING: no question of {record.task_spec} used a tool ({record.model.label} answered "
                     f"every one directly): this score measures the model without tools, not an agent. "
                     f"Check the agent's prompt with inspect=true, or use a model that calls tools "
                     f"(e.g. model=smollm2_tools after `make tool-model`).")
    return lines
