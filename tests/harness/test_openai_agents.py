"""The optional openai_agents scaffold (OpenAI Agents SDK drives the loop), with the scripted model."""

from __future__ import annotations

import pytest

pytest.importorskip("agents")

from .test_tool_loop import ScriptedModel, call, harness, kinds, run


def test_sdk_loop_text_protocol_search_then_submit():
    model = ScriptedModel([call("search", query="capital of Australia"), call("submit", answer="Canberra")])
    traj = run(harness(scaffold="openai_agents"), model)
    assert traj.end_reason == "submit" and traj.response.text == "Canberra"
    assert kinds(traj) == ["model", "tool_call", "tool_result", "model", "tool_call", "tool_result"]
    second = model.requests[1].messages
    assert second[0].role == "system" and "<tool_call>" in second[0].content
    assert second[-2].role == "assistant" and '"name": "search"' in second[-2].content
    assert second[-1].role == "user" and second[-1].content.startswith('<tool_response name="search">')
    assert "Canberra" in second[-1].content


def test_sdk_loop_native_protocol_and_plain_answer():
    model = ScriptedModel([{"name": "search", "arguments": {"query": "tungsten symbol"}, "id": "x1"}, "Tungsten"], native=True)
    traj = run(harness(scaffold="openai_agents"), model)
    assert traj.end_reason == "answer" and traj.response.text == "Tungsten"
    result = model.requests[1].messages[-1]
    assert result.role == "tool" and result.tool_call_id == "x1" and "Tungsten" in result.content
    assert {t["function"]["name"] for t in model.requests[0].tools} == {"search", "fetch_page", "submit"}


def test_sdk_loop_limits_and_invalid_arguments():
    model = ScriptedModel([call("search", q="x")] + [call("search", query="moons")] * 10)
    traj = run(harness(scaffold="openai_agents", max_turns=3), model)
    assert traj.end_reason == "max_turns" and traj.steps[-1].type == "limit"
    first_result = next(s for s in traj.steps if s.type == "tool_result")
    assert first_result.content["error"] == "invalid_arguments"
