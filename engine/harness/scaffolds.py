"""Scaffolds: how one instance's request becomes a trajectory of model and tool calls.

- ``single_turn`` is not a scaffold: the runner core sends such requests straight to the
  provider, batched.
- ``tool_loop``: model → tool calls → results fed back → model …, until the model answers without
  a tool call, calls ``submit``, or a limit (turns, tokens, time) ends it. Every model call,
  tool call, tool result and sandbox execution is a ``TrajectoryStep``; the end reason is recorded.
  A trajectory a limit ends has no answer: it is an error of kind ``max_turns``, ``max_tokens`` or
  ``max_time`` (counted apart, never scored 0), with its steps kept. The time limit counts the
  trajectory's own work, not time spent waiting for a batch or a slot (docs/architecture.md,
  "Harness limits").
- ``multi_turn``: the task scripts several user turns (``instance.row[harness.turns_field]``:
  follow-up user messages after the query); each user turn runs the tool loop; the last answer is
  the response.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config import names
from engine.config.errors import ConfigError
from engine.config.schema import HarnessConfig
from engine.harness.protocol import (
    ParsedCall,
    Protocol,
    parse_native_calls,
    parse_text_calls,
    strip_calls,
    text_protocol_prompt,
    tool_response_text,
)
from engine.harness.tools import Tool, ToolContext, ToolResult
from engine.sandbox import SandboxUnavailableError
from engine.types import (
    ChatMessage,
    GenerateRequest,
    GenerateResponse,
    InstanceError,
    ProviderError,
    Registry,
    TokenUsage,
    TrajectoryStep,
    origin_of,
    request_hash,
)

DEFAULT_AGENT_PROMPT = (
    "Solve the task. Use the tools when they help. When you know the final answer, call submit "
    "with it (or reply with the answer and no tool call)."
)


class Trajectory(BaseModel):
    """A finished trajectory: the final response (what is scored) and every step."""

    model_config = ConfigDict(frozen=True)

    response: GenerateResponse | None
    steps: list[TrajectoryStep]
    end_reason: str
    turns: int
    error: InstanceError | None = None


# A job's model call, provided by the runner core (retried, timed out, micro-batched there):
# (request, a timeout in seconds or None) -> (response, attempts, seconds the provider spent on it:
# its batch's time in the provider, not the time queued for a batch or for the model).
ModelCall = Callable[[GenerateRequest, float | None], Awaitable[tuple[GenerateResponse, int, float]]]

# The end reasons of a trajectory a limit stopped before it answered: the error kinds it records.
LIMIT_KINDS = ("max_turns", "max_tokens", "max_time")


class LimitReached(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _State:
    messages: list[ChatMessage]
    call: ModelCall
    router: Any = None
    steps: list[TrajectoryStep] = field(default_factory=list)
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    work_s: float = 0.0  # the trajectory's own work: its model calls' provider time, its tools' wall time
    budget_s: float | None = None  # harness.max_time_s
    last_text: str = ""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ToolLoop:
    name = "tool_loop"

    def __init__(self, tools: list[Tool], harness: HarnessConfig, protocol: Protocol, arguments_as_dict: bool = False):
        self.tools = {t.name: t for t in tools}
        self.harness = harness
        self.protocol = protocol
        self.schemas = [t.schema() for t in tools]
        # OpenAI-style APIs take call arguments as a JSON string; HF chat templates as a mapping.
        self.arguments_as_dict = arguments_as_dict

    # -- setup -----------------------------------------------------------------------------
    def initial_messages(self, request: GenerateRequest) -> list[ChatMessage]:
        messages = list(request.messages or ())
        if request.prompt is not None and not messages:
            messages = [ChatMessage(role="user", content=request.prompt)]
        if not self.tools:
            return messages
        instructions = self.harness.system_prompt if self.harness.system_prompt is not None else DEFAULT_AGENT_PROMPT
        if self.protocol == "text":
            instructions = f"{instructions}\n\n{text_protocol_prompt(self.schemas)}".strip()
        if not instructions:
            return messages
        if messages and messages[0].role == "system":
            return [ChatMessage(role="system", content=f"{messages[0].content}\n\n{instructions}"), *messages[1:]]
        return [ChatMessage(role="system", content=instructions), *messages]

    def turn_request(self, request: GenerateRequest, state: _State) -> GenerateRequest:
        sampling = request.sampling
        if request.messages is None and sampling.stop:
            # A completion-format task (chat: false, e.g. HumanEval stops at "\ndef "): its stop
            # sequences would cut an agent's chat turns short; the loop talks in chat messages.
            sampling = sampling.model_copy(update={"stop": ()})
        if self.tools and self.protocol == "text" and "</tool_call>" not in sampling.stop:
            sampling = sampling.model_copy(update={"stop": (*sampling.stop, "</tool_call>")})
        tools = tuple(self.schemas) if self.tools and self.protocol == "native" else ()
        return GenerateRequest(messages=tuple(state.messages), sampling=sampling, tools=tools)

    def first_request(self, request: GenerateRequest) -> GenerateRequest:
        """The first model request of a trajectory, exactly as sent (what `inspect=true` prints)."""
        return self.turn_request(request, _State(messages=self.initial_messages(request), call=_no_call))

    # -- limits ----------------------------------------------------------------------------
    def _check_limits(self, state: _State) -> None:
        h = self.harness
        if state.turns >= h.max_turns:
            raise LimitReached("max_turns", f"{state.turns} model calls (harness.max_turns={h.max_turns})")
        if h.max_total_tokens is not None and state.tokens >= h.max_total_tokens:
            raise LimitReached("max_tokens", f"{state.tokens} tokens used (harness.max_total_tokens={h.max_total_tokens})")
        self._check_time(state)

    def _check_time(self, state: _State) -> None:
        if state.budget_s is not None and state.work_s >= state.budget_s:
            raise LimitReached("max_time", f"{state.work_s:.1f} s of model and tool time "
                                           f"(harness.max_time_s={self.harness.max_time_s})")

    def _remaining(self, state: _State) -> float | None:
        """What is left of the time budget (seconds of own work), None without one."""
        return None if state.budget_s is None else max(0.0, state.budget_s - state.work_s)

    # -- one model call ----------------------------------------------------------------------
    async def _model_turn(self, request: GenerateRequest, state: _State) -> tuple[GenerateResponse, list[ParsedCall]]:
        self._check_limits(state)
        req = self.turn_request(request, state)
        started, t0 = time.time(), time.monotonic()
        try:
            # Not cut at the time budget: a call's wall time includes waiting for a batch and the model,
            # which grows with load; the budget is checked before each step (docs/architecture.md,
            # "Harness limits"). harness.request_timeout_s bounds one call; the core retries a call that
            # hit it like any transient failure (engine/runner/retry.py), so this is the last attempt's.
            resp, attempts, provider_s = await state.call(req, None)
        except asyncio.TimeoutError:
            raise ProviderError(f"no response within {self.harness.request_timeout_s} s", kind="timeout",
                                transient=True) from None
        state.work_s += provider_s
        state.turns += 1
        state.prompt_tokens += resp.usage.prompt_tokens
        state.completion_tokens += resp.usage.completion_tokens
        state.last_text = resp.text
        calls = parse_native_calls(resp.tool_calls, state.turns) if resp.tool_calls else []
        if not calls and self.tools:
            calls = parse_text_calls(resp.text, state.turns)
        state.steps.append(TrajectoryStep(
            type="model", started=started, duration_s=round(time.monotonic() - t0, 6),
            tokens=resp.usage.prompt_tokens + resp.usage.completion_tokens,
            content={"turn": state.turns, "request_hash": request_hash(req), "n_messages": len(req.messages or ()),
                     "input": req.messages[-1].model_dump(exclude_none=True) if req.messages else None,
                     "text": resp.text, "tool_calls": [c.model_dump() for c in calls],
                     "native_tool_calls": list(resp.tool_calls), "finish_reason": resp.finish_reason,
                     "prompt_tokens": resp.usage.prompt_tokens, "completion_tokens": resp.usage.completion_tokens,
                     "protocol": self.protocol, "attempts": attempts, "provider_s": round(provider_s, 6)},
        ))
        return resp, calls

    # -- one tool call -----------------------------------------------------------------------
    async def _tool_call(self, call: ParsedCall, state: _State) -> ToolResult:
        state.steps.append(TrajectoryStep(type="tool_call", started=time.time(), content={
            "turn": state.turns, "id": call.id, "name": call.name, "arguments": call.arguments,
            **({"error": call.error, "raw": call.raw} if call.error else {})}))
        t0, started = time.monotonic(), time.time()
        if call.error:
            result = ToolResult(ok=False, error="malformed_call", content=(
                f"error: {call.error}. Write <tool_call>{{\"name\": \"TOOL\", \"arguments\": {{...}}}}</tool_call> "
                f"with one of: {', '.join(self.tools)}."))
        elif call.name not in self.tools:
            result = ToolResult(ok=False, error="unknown_tool",
                                content=f"error: unknown tool {call.name!r}. Available tools: {', '.join(self.tools)}.")
        else:
            result = await self.run_tool(self.tools[call.name], call.arguments, state)
        state.steps.append(TrajectoryStep(type="tool_result", started=started, duration_s=round(time.monotonic() - t0, 6),
                                          content={"turn": state.turns, "id": call.id, "name": call.name,
                                                   "ok": result.ok, "error": result.error, "final": result.final,
                                                   "content": result.content[:8000], "data": result.data}))
        return result

    async def run_tool(self, tool: Tool, arguments: Any, state: _State) -> ToolResult:
        """One tool's execution, cut at what is left of the time budget; its wall time is the
        trajectory's own work."""
        remaining = self._remaining(state)
        t0 = time.monotonic()
        ctx = ToolContext(options=dict(self.harness.tool_options.get(tool.name, {})), router=state.router,
                          steps=state.steps, tool_name=tool.name,
                          deadline=None if remaining is None else t0 + remaining)
        try:
            return await asyncio.wait_for(tool(arguments, ctx), timeout=remaining)
        except asyncio.TimeoutError:
            return ToolResult(ok=False, error="max_time", content="error: the time limit was reached.")
        finally:
            state.work_s += time.monotonic() - t0

    def _assistant_message(self, resp: GenerateResponse, calls: list[ParsedCall]) -> ChatMessage:
        if self.protocol == "native":
            native = tuple({"id": c.id, "type": "function",
                            "function": {"name": c.name or "", "arguments": (c.arguments or {}) if self.arguments_as_dict
                                         else _json_args(c.arguments)}}
                           for c in calls if not c.error)
            return ChatMessage(role="assistant", content=resp.text, tool_calls=native or None)
        text = resp.text
        if text.count("<tool_call>") > text.count("</tool_call>"):
            text += "</tool_call>"  # generation stopped at the closing tag
        return ChatMessage(role="assistant", content=text)

    def _result_message(self, call: ParsedCall, result: ToolResult) -> ChatMessage:
        if self.protocol == "native" and not call.error:
            return ChatMessage(role="tool", content=result.content, tool_call_id=call.id, name=call.name)
        return ChatMessage(role="user", content=tool_response_text(call.name or "?", result.content))

    # -- the loop ----------------------------------------------------------------------------
    async def loop(self, request: GenerateRequest, state: _State) -> tuple[str, str]:
        """Run until an answer; returns (answer, end reason). Raises LimitReached."""
        while True:
            resp, calls = await self._model_turn(request, state)
            if not calls:
                return resp.text, "answer"
            state.messages.append(self._assistant_message(resp, calls))
            for call in calls:
                self._check_time(state)
                result = await self._tool_call(call, state)
                if result.final:
                    return result.content, "submit"
                state.messages.append(self._result_message(call, result))

    async def run(self, request: GenerateRequest, call: ModelCall, router: Any = None, instance: Any = None) -> Trajectory:
        state = self._new_state(request, call, router)
        try:
            answer, reason = await self.converse(request, state, instance)
        except LimitReached as lim:
            return self._limited(state, lim)
        except (ProviderError, SandboxUnavailableError) as err:  # a lost sandbox host: an error, never a score
            return self._errored(state, err)
        return self._finish(state, answer, reason)

    async def converse(self, request: GenerateRequest, state: _State, instance: Any) -> tuple[str, str]:
        """The whole conversation: one loop here; MultiTurn adds the instance's user turns."""
        return await self.loop(request, state)

    # -- endings -----------------------------------------------------------------------------
    def _new_state(self, request: GenerateRequest, call: ModelCall, router: Any = None) -> _State:
        return _State(messages=self.initial_messages(request), call=call, router=router,
                      budget_s=self.harness.max_time_s)

    def _response(self, state: _State, text: str, reason: str) -> GenerateResponse:
        return GenerateResponse(text=text, finish_reason=reason,
                                usage=TokenUsage(prompt_tokens=state.prompt_tokens, completion_tokens=state.completion_tokens))

    def _finish(self, state: _State, answer: str, reason: str) -> Trajectory:
        _mark_end(state.steps, reason)
        return Trajectory(response=self._response(state, answer, reason), steps=state.steps, end_reason=reason,
                          turns=state.turns)

    def _limited(self, state: _State, lim: LimitReached) -> Trajectory:
        """A limit ended the trajectory before the model answered: an error of the limit's kind, never a
        score (a 0 would count the harness's cut as the model's wrong answer). The prose the model last
        wrote (tool-call markup removed) is kept in the limit step, for reading, not scored."""
        last_text = strip_calls(state.last_text)
        state.steps.append(TrajectoryStep(type="limit", started=time.time(), content={
            "reason": lim.reason, "detail": lim.detail, "turns": state.turns, "tokens": state.tokens,
            "work_s": round(state.work_s, 3), "elapsed_s": round(time.monotonic() - state.started, 3),
            "last_text": last_text}))
        _mark_end(state.steps, lim.reason)
        error = InstanceError(kind=lim.reason, message=f"the trajectory ended without an answer: {lim.detail}",
                              attempts=1)
        return Trajectory(response=None, steps=state.steps, end_reason=lim.reason, turns=state.turns, error=error)

    def _errored(self, state: _State, err: ProviderError | SandboxUnavailableError) -> Trajectory:
        _mark_end(state.steps, "error")
        transient = isinstance(err, ProviderError) and err.transient
        return Trajectory(response=None, steps=state.steps, end_reason="error", turns=state.turns,
                          error=InstanceError(kind=err.kind, message=str(err)[:1000], attempts=1 + self.harness.max_retries
                                              if transient else 1))


class MultiTurn(ToolLoop):
    name = "multi_turn"

    def user_turns(self, instance: Any) -> list[str]:
        row = getattr(instance, "row", None) or {}
        turns = row.get(self.harness.turns_field) or []
        if isinstance(turns, str):
            turns = [turns]
        return [str(t.get("content", "")) if isinstance(t, dict) else str(t) for t in turns]

    async def converse(self, request: GenerateRequest, state: _State, instance: Any) -> tuple[str, str]:
        answer, reason = await self.loop(request, state)
        for i, turn in enumerate(self.user_turns(instance)):
            state.messages.append(ChatMessage(role="assistant", content=answer))
            state.messages.append(ChatMessage(role="user", content=turn))
            state.steps.append(TrajectoryStep(type="user", started=time.time(), content={
                "user_turn": i + 2, "content": turn}))
            answer, reason = await self.loop(request, state)
        return answer, reason


async def _no_call(request: GenerateRequest, timeout_s: float | None) -> tuple[GenerateResponse, int, float]:
    raise RuntimeError("first_request builds a request; it never calls the model")


def _mark_end(steps: list[TrajectoryStep], reason: str) -> None:
    if steps:
        last = steps[-1]
        steps[-1] = last.model_copy(update={"content": {**last.content, "end_reason": reason}})


def _json_args(args: Any) -> str:
    return json.dumps(args if args is not None else {}, default=str)


# Scaffolds by name for `harness.scaffold` (docs/architecture.md, "Extensions"); `@scaffold` adds a user's.
SCAFFOLDS: Registry[type[ToolLoop]] = Registry(
    "scaffold", "@scaffold", ConfigError, on_add=lambda name, c: names.declare("scaffold", name, origin=origin_of(c)))
# single_turn is no scaffold class: one request, no loop (engine/harness/build.py).
names.declare("scaffold", "single_turn", origin="engine.harness.build")


def scaffold(cls: type[ToolLoop] | None = None, *, name: str | None = None) -> Any:
    """`@scaffold` or `@scaffold(name=...)` on a ToolLoop subclass: `harness.scaffold: <name>` runs it.
    Bare, the name is the class's own `name` attribute when it sets one, else its name in snake case."""

    def wrap(c: type[ToolLoop]) -> type[ToolLoop]:
        if not (isinstance(c, type) and issubclass(c, ToolLoop)):
            raise TypeError(f"@scaffold decorates a subclass of engine.harness.ToolLoop, not {c!r}")
        key = name or c.__dict__.get("name") or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", c.__name__).lower()
        c.name = key
        return SCAFFOLDS.add(key, c)

    return wrap(cls) if cls is not None else wrap


scaffold(ToolLoop)
scaffold(MultiTurn)
