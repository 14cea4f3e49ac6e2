"""``openai_agents`` scaffold: the OpenAI Agents SDK (``pip install openai-agents``) runs the loop.

The SDK drives turns, tool dispatch and ``submit`` (``StopAtTools``); our provider serves the model
calls through an ``agents.Model`` adapter (so any evalbench provider — hf or litellm — works, with
the same native/text protocol choice as ``tool_loop``), and our ``@tool`` tools run as SDK
``FunctionTool``s (validation errors still go back to the model as tool results). Every model
call and tool call is recorded as a ``TrajectoryStep`` exactly as in ``tool_loop``. SDK tracing is
off (our MLflow traces record the trajectory). Behaviour that is the SDK's, recorded as is: a call
to an unknown tool ends the run with the SDK's ``ModelBehaviorError``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.harness.protocol import tool_response_text
from engine.harness.scaffolds import LimitReached, ModelCall, ToolLoop, Trajectory, _State, scaffold
from engine.types import ChatMessage, GenerateRequest, ProviderError, TrajectoryStep


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


@scaffold
class OpenAIAgentsLoop(ToolLoop):
    name = "openai_agents"

    # -- chat-completions messages (from the SDK's converter) → our messages ------------------
    def _to_messages(self, raw: list[dict[str, Any]]) -> list[ChatMessage]:
        out: list[ChatMessage] = []
        for m in raw:
            role, content = m.get("role"), _text(m.get("content"))
            if role == "assistant" and m.get("tool_calls"):
                calls = list(m["tool_calls"])
                if self.protocol == "native":
                    if self.arguments_as_dict:
                        calls = [{**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"] or "{}")}}
                                 for c in calls]
                    out.append(ChatMessage(role="assistant", content=content, tool_calls=tuple(calls)))
                else:
                    blocks = "".join(f'<tool_call>{{"name": "{c["function"]["name"]}", "arguments": '
                                     f'{c["function"]["arguments"] or "{}"}}}</tool_call>' for c in calls)
                    out.append(ChatMessage(role="assistant", content=f"{content}{blocks}"))
            elif role == "tool":
                name = self._call_names.get(m.get("tool_call_id", ""), "tool")
                if self.protocol == "native":
                    out.append(ChatMessage(role="tool", content=content, tool_call_id=m.get("tool_call_id"), name=name))
                else:
                    out.append(ChatMessage(role="user", content=tool_response_text(name, content)))
            elif role in ("system", "developer"):
                out.append(ChatMessage(role="system", content=content))
            else:
                out.append(ChatMessage(role="user" if role != "assistant" else "assistant", content=content))
        return out

    def _model(self, state: _State, base: GenerateRequest):
        from agents import Model, ModelResponse  # optional extra `agents`: imported only when this scaffold runs
        from agents.models.chatcmpl_converter import Converter
        from agents.usage import Usage
        from openai.types.chat import ChatCompletionMessage, ChatCompletionMessageToolCall
        from openai.types.chat.chat_completion_message_tool_call import Function

        loop = self

        class ProviderModel(Model):
            async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs,
                                   tracing, *, previous_response_id=None, conversation_id=None, prompt=None, **_):
                raw = Converter.items_to_messages(input)
                messages = loop._to_messages([dict(m) for m in raw])
                if system_instructions:
                    messages = [ChatMessage(role="system", content=system_instructions), *messages]
                state.messages = messages
                resp, calls = await loop._model_turn(base, state)
                tool_calls: list[Any] = []
                for c in calls:
                    if c.error:  # the SDK has no place for an unparsable call: recorded, fed back as text
                        continue
                    loop._call_names[c.id] = c.name or ""
                    tool_calls.append(ChatCompletionMessageToolCall(
                        id=c.id, type="function", function=Function(name=c.name or "", arguments=json.dumps(c.arguments or {}))))
                text = resp.text if not tool_calls else resp.text.split("<tool_call>")[0].strip()
                msg = ChatCompletionMessage(role="assistant", content=text or None, tool_calls=tool_calls or None)
                u = resp.usage
                return ModelResponse(output=Converter.message_to_output_items(msg),
                                     usage=Usage(requests=1, input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens,
                                                 total_tokens=u.prompt_tokens + u.completion_tokens),
                                     response_id=None)

            def stream_response(self, *a, **k):  # pragma: no cover - the harness never streams
                raise NotImplementedError("evalbench's openai_agents scaffold does not stream")

        return ProviderModel()

    def _function_tools(self, state: _State) -> list[Any]:
        from agents import FunctionTool  # optional extra `agents`

        out = []
        for t in self.tools.values():
            async def invoke(ctx: Any, args_json: str, _tool=t) -> str:
                call_id = getattr(ctx, "tool_call_id", None) or f"call_{state.turns}"
                state.steps.append(TrajectoryStep(type="tool_call", started=time.time(), content={
                    "turn": state.turns, "id": call_id, "name": _tool.name, "arguments": _safe_json(args_json)}))
                t0, started = time.monotonic(), time.time()
                self._check_time(state)  # the SDK carries the LimitReached out as an AgentsException's cause
                result = await self.run_tool(_tool, args_json, state)
                state.steps.append(TrajectoryStep(type="tool_result", started=started, duration_s=round(time.monotonic() - t0, 6),
                                                  content={"turn": state.turns, "id": call_id, "name": _tool.name, "ok": result.ok,
                                                           "error": result.error, "final": result.final,
                                                           "content": result.content[:8000], "data": result.data}))
                return result.content

            out.append(FunctionTool(name=t.name, description=t.description, params_json_schema=t.parameters,
                                    on_invoke_tool=invoke, strict_json_schema=False))
        return out

    async def run(self, request: GenerateRequest, call: ModelCall, router: Any = None, instance: Any = None) -> Trajectory:
        try:
            from agents import Agent, RunConfig, Runner, StopAtTools  # optional extra `agents`
            from agents.exceptions import AgentsException, MaxTurnsExceeded
        except ImportError as err:
            raise ProviderError("scaffold openai_agents needs the OpenAI Agents SDK: pip install openai-agents",
                                kind="config") from err
        self._call_names: dict[str, str] = {}
        state = self._new_state(request, call, router)
        first = state.messages
        instructions = first[0].content if first and first[0].role == "system" else None
        inputs: list[Any] = [{"role": m.role, "content": m.content} for m in first if m.role in ("user", "assistant")]
        agent = Agent(name="evalbench", instructions=instructions, model=self._model(state, request),
                      tools=self._function_tools(state),
                      tool_use_behavior=StopAtTools(stop_at_tool_names=["submit"]) if "submit" in self.tools else "run_llm_again")
        try:
            coro = Runner.run(agent, input=inputs, max_turns=self.harness.max_turns,
                              run_config=RunConfig(tracing_disabled=True, workflow_name="evalbench"))
            # The time budget is checked before each model and tool call (`_model_turn`, `run_tool`), as
            # the tool loop does: never a wall-clock cut that counts waiting (docs/architecture.md, "Harness limits").
            result = await coro
        except MaxTurnsExceeded:
            return self._limited(state, LimitReached("max_turns", f"{state.turns} model calls (harness.max_turns="
                                                                  f"{self.harness.max_turns})"))
        except LimitReached as lim:
            return self._limited(state, lim)
        except ProviderError as err:
            return self._errored(state, err)
        except AgentsException as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, LimitReached):
                return self._limited(state, cause)
            if isinstance(cause, ProviderError):
                return self._errored(state, cause)
            return self._errored(state, ProviderError(f"{type(err).__name__}: {err}", kind=type(err).__name__))
        final = "" if result.final_output is None else str(result.final_output)
        submitted = any(s.type == "tool_result" and s.content.get("final") for s in state.steps)
        return self._finish(state, final, "submit" if submitted else "answer")


def _safe_json(blob: str) -> Any:
    try:
        return json.loads(blob) if blob else {}
    except json.JSONDecodeError:
        return blob


__all__ = ["OpenAIAgentsLoop"]
