"""The tool loop's logic, driven by a scripted model (a test double returning scripted responses).

What is tested is our loop: tool call → execution → result fed back → next turn; limits ending a
trajectory with a recorded reason; malformed calls, unknown tools and invalid arguments returned
to the model as tool results; both protocols (native tool_calls and <tool_call> text).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from engine.config.schema import HarnessConfig
from engine.harness.build import build_scaffold, policy_signature, sandbox_resources
from engine.harness.protocol import parse_text_calls
from engine.harness.tools import Tool, ToolContext, ToolResult, parse_docstring, tool
from engine.runner.cache import ResultCache
from engine.runner.core import RunnerCore
from engine.sandbox import default_pool  # the strongest backend here (bwrap, docker or local)
from engine.types import ChatMessage, GenerateRequest, GenerateResponse, ModelIdentity, ProviderError, SamplingParams, TokenUsage

CORPUS = {"search": {"corpus": "data/corpus", "k": 2}, "fetch_page": {"corpus": "data/corpus"}}


class ScriptedModel:
    """Returns the scripted replies in order (str: text; dict: a native tool call); records requests."""

    def __init__(self, script, *, usage=(10, 5), delay: float = 0.0, native: bool = False):
        self.identity = ModelIdentity(name="scripted", provider="litellm" if native else "test")
        self.default_protocol = "native" if native else "text"
        self.max_batch = 1
        self.script = list(script)
        self.requests: list[GenerateRequest] = []
        self.usage = usage
        self.delay = delay

    async def generate(self, requests):
        out = []
        for req in requests:
            self.requests.append(req)
            if self.delay:
                await asyncio.sleep(self.delay)
            item = self.script.pop(0) if self.script else "I give up."
            if callable(item):  # order-independent replies (the runner sorts batches by length)
                self.script.insert(0, item)
                item = item(req)
            if isinstance(item, Exception):
                raise item
            usage = TokenUsage(prompt_tokens=self.usage[0], completion_tokens=self.usage[1])
            if isinstance(item, dict):
                call = {"id": item.get("id", "c1"), "type": "function",
                        "function": {"name": item["name"], "arguments": json.dumps(item.get("arguments", {}))}}
                out.append(GenerateResponse(text="", tool_calls=(call,), usage=usage))
            else:
                out.append(GenerateResponse(text=item, usage=usage))
        return out

    async def aclose(self):
        return None


def request(question: str = "Which planet has the most moons?") -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage(role="user", content=question),), sampling=SamplingParams(max_tokens=32))


def harness(**kw) -> HarnessConfig:
    base = dict(name="t", scaffold="tool_loop", tools=["search", "fetch_page", "submit"], max_turns=5,
                tool_options=CORPUS, retry_backoff_s=0.0)
    return HarnessConfig(**{**base, **kw})


def call(name: str, **args) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {json.dumps(args)}}}</tool_call>'


class Bound:
    """A scaffold bound to a model the way a run binds it: model calls go through the runner core."""

    def __init__(self, h: HarnessConfig, model, router=None):
        self.core = RunnerCore(model, h, ResultCache(None), progress=False)
        self.scaffold = build_scaffold(h, model)
        self.router = router

    async def run(self, req, instance=None):
        return await self.scaffold.run(req, self.core.call_model, self.router, instance)


def run(h: HarnessConfig, model, req=None, instance=None):
    return asyncio.run(Bound(h, model).run(req or request(), instance))


def kinds(traj):
    return [s.type for s in traj.steps]


def test_tool_call_result_fed_back_then_submit():
    model = ScriptedModel([call("search", query="planet most moons"), call("submit", answer="Saturn")])
    traj = run(harness(), model)
    assert traj.end_reason == "submit"
    assert traj.response.text == "Saturn"
    assert kinds(traj) == ["model", "tool_call", "tool_result", "model", "tool_call", "tool_result"]
    # the text protocol: tools described in the system prompt, the call closed, the result as a user turn
    second = model.requests[1].messages
    assert second[0].role == "system" and "<tool_call>" in second[0].content and "search(" in second[0].content
    assert second[-2].role == "assistant" and second[-2].content.endswith("</tool_call>")
    assert second[-1].role == "user" and second[-1].content.startswith('<tool_response name="search">')
    assert "Saturn" in second[-1].content  # the search result reached the model
    assert "</tool_call>" in model.requests[0].sampling.stop
    result = traj.steps[2].content
    assert result["ok"] and result["data"]["hits"][0]["id"] == "saturn_moons.md"
    assert traj.steps[-1].content["end_reason"] == "submit"
    assert traj.response.usage.prompt_tokens == 20 and traj.response.usage.completion_tokens == 10


def test_plain_answer_ends_the_loop():
    traj = run(harness(), ScriptedModel(["Canberra"]))
    assert (traj.end_reason, traj.response.text, traj.turns) == ("answer", "Canberra", 1)


def test_unclosed_tag_counts_as_a_call():
    # generation stops at the stop string "</tool_call>", which the provider strips
    model = ScriptedModel(['<tool_call>{"name": "search", "arguments": {"query": "tungsten"}}', "W is tungsten."])
    traj = run(harness(), model)
    assert kinds(traj)[:3] == ["model", "tool_call", "tool_result"]
    assert traj.steps[2].content["ok"]


def test_malformed_call_is_returned_to_the_model():
    model = ScriptedModel(['<tool_call>{"name": "search", "arguments": {"query": </tool_call>', "Saturn"])
    traj = run(harness(), model)
    tc, tr = traj.steps[1], traj.steps[2]
    assert tc.type == "tool_call" and "not valid JSON" in tc.content["error"]
    assert tr.content["error"] == "malformed_call" and not tr.content["ok"]
    fed = model.requests[1].messages[-1]
    assert fed.role == "user" and "error:" in fed.content and "<tool_call>" in fed.content
    assert traj.end_reason == "answer" and traj.response.text == "Saturn"


def test_unknown_tool_is_returned_to_the_model():
    model = ScriptedModel([call("google", query="x"), "done"])
    traj = run(harness(), model)
    assert traj.steps[2].content["error"] == "unknown_tool"
    assert "Available tools: search, fetch_page, submit" in model.requests[1].messages[-1].content


def test_argument_validation_error_is_returned_to_the_model():
    model = ScriptedModel([call("search", q="moons"), call("search", query=["not", "a", "string"]), "ok"])
    traj = run(harness(), model)
    errors = [s.content for s in traj.steps if s.type == "tool_result"]
    assert [e["error"] for e in errors] == ["invalid_arguments", "invalid_arguments"]
    assert "query: Field required" in errors[0]["content"] and "Expected parameters: query" in errors[0]["content"]
    assert "valid string" in errors[1]["content"]
    assert traj.end_reason == "answer"


def test_tool_exception_is_a_result_not_a_crash():
    @tool(register=False)
    def explode(x: int) -> str:
        """Always fails."""
        raise RuntimeError("boom")

    h = harness(tools=["submit"])
    hx = Bound(h, ScriptedModel([call("explode", x=1), "fine"]))
    hx.scaffold.tools["explode"] = explode
    traj = asyncio.run(hx.run(request()))
    assert traj.steps[2].content["error"] == "tool_error" and "RuntimeError: boom" in traj.steps[2].content["content"]
    assert traj.end_reason == "answer"


def test_max_turns_limit_is_an_error_not_a_score():
    model = ScriptedModel([call("search", query="moons")] * 10)
    traj = run(harness(max_turns=3), model)
    assert traj.end_reason == "max_turns" and traj.turns == 3 and len(model.requests) == 3
    limit = traj.steps[-1]
    assert limit.type == "limit" and limit.content["reason"] == "max_turns" and limit.content["end_reason"] == "max_turns"
    # No answer: an error of the limit's kind with the steps kept, no response to score.
    assert traj.response is None and traj.error is not None and traj.error.kind == "max_turns"
    assert "without an answer" in traj.error.message and limit.content["last_text"] == ""


def test_token_limit_is_an_error():
    model = ScriptedModel([call("search", query="moons")] * 10, usage=(100, 50))
    traj = run(harness(max_total_tokens=300), model)
    assert traj.end_reason == "max_tokens" and traj.turns == 2
    assert traj.steps[-1].content["tokens"] == 300
    assert traj.response is None and traj.error is not None and traj.error.kind == "max_tokens"


def test_time_limit_is_an_error():
    model = ScriptedModel([call("search", query="moons")] * 50, delay=0.2)
    t0 = time.monotonic()
    traj = run(harness(max_time_s=0.5, max_turns=50), model)
    assert traj.end_reason == "max_time" and traj.turns < 50
    # Without the limit the 50 turns would take >= 10 s; the margin absorbs a busy machine.
    assert time.monotonic() - t0 < 8.0
    assert traj.steps[-1].type == "limit"
    assert traj.response is None and traj.error is not None and traj.error.kind == "max_time"
    assert traj.steps[-1].content["work_s"] >= 0.5


@pytest.mark.parametrize("limit", [{"max_turns": 2}, {"max_total_tokens": 30}, {"max_time_s": 0.5}])
def test_an_answer_on_the_last_allowed_step_is_scored(limit):
    """A model that answers before the limit cuts it: the answer is the response, no error."""
    model = ScriptedModel([call("search", query="moons"), call("submit", answer="Saturn")], usage=(10, 5), delay=0.1)
    traj = run(harness(**limit), model)
    assert traj.error is None and traj.end_reason == "submit" and traj.response.text == "Saturn"


class OneAtATime(ScriptedModel):
    """An in-process model (`hf`'s identity): it serves one call at a time, as the hf provider's one
    worker thread does, so concurrent callers queue for it."""

    def __init__(self, script, delay: float):
        super().__init__(script, delay=delay)
        self.identity = ModelIdentity(name="scripted", provider="hf")
        self.busy = asyncio.Lock()

    async def generate(self, requests):
        async with self.busy:
            return await super().generate(requests)


def test_time_limit_counts_the_trajectorys_work_not_waiting_for_the_model():
    """Two trajectories share a model that serves one call in 0.3 s at a time. Each trajectory's own
    work is 3 calls x 0.3 s (< its 1.5 s budget), though each call may wait for the other's (the wall
    time of both is > 1.8 s): waiting must not count, so both answer, as on an idle machine."""
    def reply(req):
        turns = sum(m.role == "assistant" for m in req.messages)
        return call("submit", answer="x") if turns >= 2 else call("search", query="moons")

    model = OneAtATime([reply], delay=0.3)
    h = harness(max_time_s=1.5, max_turns=5, protocol="text")
    core = RunnerCore(model, h, ResultCache(None), progress=False)
    scaffold = build_scaffold(h, model)

    async def go():
        return await asyncio.gather(*(scaffold.run(request(q), core.call_model)
                                      for q in ("Which planet has the most moons?", "Which moon is largest?")))

    t0 = time.monotonic()
    trajectories = asyncio.run(go())
    assert time.monotonic() - t0 >= 1.8  # the calls did queue behind each other
    for traj in trajectories:
        assert traj.error is None and traj.end_reason == "submit", traj.steps[-1].content
        models = [s for s in traj.steps if s.type == "model"]
        # Each call is charged the model's own 0.3 s (+ scheduling noise), not its wait for the other's.
        assert len(models) == 3 and all(0.25 <= s.content["provider_s"] < 0.6 for s in models), \
            [s.content["provider_s"] for s in models]


def test_time_limit_counts_tool_time():
    """A tool's wall time is the trajectory's own work: a slow tool ends it at the budget."""
    @tool(register=False)
    async def slow(x: int) -> str:
        """Wait, then echo.

        Args:
            x: a number.
        """
        await asyncio.sleep(0.4)
        return str(x)

    model = ScriptedModel([call("slow", x=1)] * 10)
    h = harness(max_time_s=1.0, max_turns=10, tools=[])
    scaffold = build_scaffold(h, model)
    scaffold.tools = {"slow": slow}
    core = RunnerCore(model, h, ResultCache(None), progress=False)
    traj = asyncio.run(scaffold.run(request(), core.call_model))
    assert traj.error is not None and traj.error.kind == "max_time"
    results = [s for s in traj.steps if s.type == "tool_result"]
    assert 2 <= len(results) <= 3 and traj.steps[-1].content["work_s"] >= 1.0


def test_provider_error_ends_with_error_and_keeps_steps():
    model = ScriptedModel([call("search", query="moons"), ProviderError("bad request", kind="bad_request")])
    traj = run(harness(), model)
    assert traj.end_reason == "error" and traj.response is None
    assert traj.error.kind == "bad_request"
    assert kinds(traj) == ["model", "tool_call", "tool_result"]


def test_transient_provider_error_is_retried():
    model = ScriptedModel([ProviderError("busy", transient=True), "Saturn"])
    traj = run(harness(), model)
    assert traj.end_reason == "answer" and traj.steps[0].content["attempts"] == 2


def test_native_protocol():
    model = ScriptedModel([{"name": "search", "arguments": {"query": "capital of Australia"}, "id": "abc"},
                           {"name": "submit", "arguments": {"answer": "Canberra"}}], native=True)
    traj = run(harness(), model)
    assert traj.end_reason == "submit" and traj.response.text == "Canberra"
    first, second = model.requests
    assert {t["function"]["name"] for t in first.tools} == {"search", "fetch_page", "submit"}
    assert "<tool_call>" not in first.messages[0].content  # no text protocol in native mode
    assistant, result = second.messages[-2], second.messages[-1]
    assert assistant.tool_calls[0]["id"] == "abc" and assistant.tool_calls[0]["function"]["name"] == "search"
    assert result.role == "tool" and result.tool_call_id == "abc" and "Canberra" in result.content


def test_fetch_corpus_page_and_network_refused():
    model = ScriptedModel([call("fetch_page", url="corpus://jwst.md"), call("fetch_page", url="https://example.com"), "2021"])
    traj = run(harness(), model)
    results = [s.content for s in traj.steps if s.type == "tool_result"]
    assert results[0]["ok"] and "25 December 2021" in results[0]["content"]
    assert results[1]["error"] == "capability" and "network" in results[1]["content"]


def test_multi_turn_scripted_user_turns():
    from engine.tasks.instance import Instance

    inst = Instance(id="1", query="q", row={"turns": ["And its largest moon?"]})
    model = ScriptedModel(["Saturn", call("search", query="Saturn largest moon"), "Titan"])
    traj = run(harness(scaffold="multi_turn"), model, instance=inst)
    assert traj.end_reason == "answer" and traj.response.text == "Titan"
    assert "user" in kinds(traj)
    last = model.requests[-1].messages
    assert [m.content for m in last if m.role == "user"][1] == "And its largest moon?"


def test_sandboxed_python_exec_records_the_execution():
    h = harness(tools=["python_exec", "submit"], tool_options={"python_exec": {"timeout_s": 10}})
    model = ScriptedModel([call("python_exec", code="print(6*7)"), call("submit", answer="42")])

    async def go():
        async with sandbox_resources(h)(1) as router:
            return await Bound(h, model, router).run(request("6*7?"))

    traj = asyncio.run(go())
    assert kinds(traj) == ["model", "tool_call", "sandbox", "tool_result", "model", "tool_call", "tool_result"]
    sb = traj.steps[2].content
    assert sb["backend"] == default_pool().backend and sb["exit_code"] == 0 and sb["stdout"].strip() == "42"
    assert "42" in model.requests[1].messages[-1].content
    assert traj.response.text == "42"


def test_python_exec_without_sandbox_is_a_tool_error():
    model = ScriptedModel([call("python_exec", code="print(1)"), "no"])
    traj = run(harness(tools=["python_exec"]), model)
    assert traj.steps[2].content["error"] == "capability"


def test_text_call_parsing_variants():
    # a lone surrogate spelled in JSON (no UTF-8 record could hold it) arrives as U+FFFD, nested too
    hostile = parse_text_calls('<tool_call>{"name": "search\\ud800", "arguments": "{\\"q\\": \\"\\\\udc00x\\"}"}</tool_call>', 1)[0]
    assert (hostile.name, hostile.arguments) == ("search\ufffd", {"q": "\ufffdx"})
    assert parse_text_calls('{"name": "search", "arguments": {"query": "x"}}', 1)[0].name == "search"
    assert parse_text_calls('I will search. <tool_call>{"name": "search", "arguments": "{\\"query\\": \\"x\\"}"}</tool_call>',
                            1)[0].arguments == {"query": "x"}
    two = parse_text_calls(call("search", query="a") + "\n" + call("submit", answer="b"), 1)
    assert [c.name for c in two] == ["search", "submit"]
    assert parse_text_calls("Saturn has the most moons.", 1) == []
    assert parse_text_calls('<tool_call>{"arguments": {}}</tool_call>', 1)[0].error == 'the tool call has no "name"'
    trailing = parse_text_calls('<tool_call>{"name": "submit", "arguments": {"answer": "x"}} extra</tool_call>', 1)
    assert trailing[0].arguments == {"answer": "x"}


def test_tool_decorator_schema_from_hints_and_docstring():
    @tool(register=False, requires=["python"])
    async def adder(a: int, b: int = 2, ctx: ToolContext = None) -> ToolResult:  # type: ignore[assignment]
        """Add two numbers.

        More text that is not the description.

        Args:
            a: the first
                number.
            b: the second number.
        """
        return ToolResult(content=str(a + b))

    assert isinstance(adder, Tool) and adder.requires == {"python"}
    params = adder.parameters
    assert adder.description == "Add two numbers."
    assert params["required"] == ["a"] and "ctx" not in params["properties"]
    assert params["properties"]["a"] == {"type": "integer", "description": "the first number."}
    assert asyncio.run(adder('{"a": 1}', ToolContext())).content == "3"
    bad = asyncio.run(adder({"a": "x"}, ToolContext()))
    assert not bad.ok and bad.error == "invalid_arguments"
    assert parse_docstring(None) == ("", {})


def test_policy_signature_changes_with_limits_not_with_concurrency():
    a, b = harness(), harness(max_turns=2)
    assert policy_signature(a) != policy_signature(b)
    assert policy_signature(a) == policy_signature(harness(concurrency=9))
    assert policy_signature(HarnessConfig()) == "single_turn"


@pytest.mark.parametrize("protocol", ["text", "native"])
def test_auto_protocol_detection(protocol):
    from engine.harness.protocol import choose_protocol

    class Tok:
        chat_template = "{% if tools %}...{% endif %}" if protocol == "native" else "{{ messages }}"

    class HF:
        identity = ModelIdentity(name="m", provider="hf")
        tokenizer = Tok()

    assert choose_protocol("auto", HF()) == protocol
    assert choose_protocol("auto", ScriptedModel([], native=True)) == "native"


def test_concurrent_trajectories_share_batches():
    class Counting(ScriptedModel):
        def __init__(self):
            super().__init__([lambda req: "ok"])
            self.batches: list[int] = []

        async def generate(self, requests):
            self.batches.append(len(requests))
            return await super().generate(requests)

    inner = Counting()
    inner.max_batch = 8
    h = Bound(harness(), inner)

    async def go():
        return await asyncio.gather(*(h.run(request(f"q{i}")) for i in range(5)))

    trajs = asyncio.run(go())
    assert all(t.end_reason == "answer" for t in trajs)
    assert inner.batches == [5]


HERMES_TEMPLATE = """{%- if tools %}<|im_start|>system
Tools: {% for t in tools %}{{ t.function.name }} {% endfor %}<|im_end|>
{% endif %}{%- for m in messages %}{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant
{% for tc in m.tool_calls %}<tool_call>{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>{{ m.content }}</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def test_hf_native_protocol_renders_through_a_tool_aware_chat_template(smollm2_dir):
    """A model whose chat template renders tools (Hermes/Qwen style): tools go to the template,
    calls come back as <tool_call> text, results as `tool` messages the template renders."""
    from transformers import AutoTokenizer

    from engine.models.hf import HFProvider

    class FakeHF(ScriptedModel):
        def __init__(self, script):
            super().__init__(script)
            self.identity = ModelIdentity(name="hermes-like", provider="hf")
            self.tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
            self.tokenizer.chat_template = HERMES_TEMPLATE

    model = FakeHF([call("search", query="capital of Australia"), "Canberra"])
    traj = run(harness(protocol="auto"), model)
    assert traj.end_reason == "answer" and traj.steps[0].content["protocol"] == "native"
    prompt = HFProvider.render_prompt(model, model.requests[1])
    assert "Tools: search fetch_page submit" in prompt
    assert '<tool_call>{"name": "search", "arguments": {"query": "capital of Australia"}}</tool_call>' in prompt
    assert "<tool_response>[1] " in prompt and "Canberra" in prompt.split("<tool_response>")[1]


def test_completion_task_becomes_a_chat_turn_without_completion_stops():
    req = GenerateRequest(prompt="def f(x):\n    \"\"\"Return x + 1.\"\"\"\n",
                          sampling=SamplingParams(max_tokens=32, stop=("\ndef ", "\n#")))
    model = ScriptedModel(["def f(x):\n    return x + 1"])
    traj = run(harness(tools=["python_exec", "submit"]), model, req=req)
    sent = model.requests[0]
    assert sent.prompt is None and sent.messages[-1].role == "user" and sent.messages[-1].content.startswith("def f(x)")
    assert sent.sampling.stop == ("</tool_call>",)
    assert traj.response.text.startswith("def f(x)")
