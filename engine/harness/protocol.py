"""How tool calls travel between the loop and the model.

- ``native``: tool schemas go in ``GenerateRequest.tools`` (litellm function calling; the hf
  provider renders them through the model's chat template). Calls come back in
  ``GenerateResponse.tool_calls`` or, for chat templates of the Hermes/Qwen family, as
  ``<tool_call>{json}</tool_call>`` in the text, which is parsed here. Results go back as
  ``tool`` messages.
- ``text``: for models without native tool calls (SmolLM2's template ignores ``tools``). The tools
  and the call format are described in the system prompt; the model writes
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; results come back as user
  messages wrapped in ``<tool_response>``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.types import valid_unicode

Protocol = Literal["native", "text"]

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


class ParsedCall(BaseModel):
    """One tool call as the model wrote it; ``error`` when it could not be understood."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = None
    arguments: Any = None
    raw: str = ""
    error: str | None = None


def _decode(blob: str) -> Any:
    """The JSON object in a model's tool-call text; its strings hold no lone surrogate (valid_unicode)."""
    return valid_unicode(_loads(blob))


def _loads(blob: str) -> Any:
    blob = blob.strip()
    m = _FENCE.match(blob)
    if m:
        blob = m.group(1)
    try:
        return json.loads(blob)
    except json.JSONDecodeError:
        # Models often add trailing text after the object: take the first balanced {...}.
        start = blob.find("{")
        if start < 0:
            raise
        depth, in_str, esc = 0, False, False
        for i, ch in enumerate(blob[start:], start):
            if in_str:
                esc = ch == "\\" and not esc
                if ch == '"' and not esc:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return json.loads(blob[start : i + 1])
        raise


def _from_obj(obj: Any, call_id: str, raw: str) -> ParsedCall:
    if not isinstance(obj, dict):
        return ParsedCall(id=call_id, raw=raw, error=f"a tool call must be a JSON object, got {type(obj).__name__}")
    if "function" in obj and isinstance(obj["function"], dict):  # OpenAI shape
        obj = {**obj["function"], "id": obj.get("id")}
    name = obj.get("name") or obj.get("tool")
    if not isinstance(name, str) or not name:
        return ParsedCall(id=call_id, raw=raw, error='the tool call has no "name"')
    args = obj.get("arguments", obj.get("parameters", obj.get("args", {})))
    if isinstance(args, str):
        try:
            args = valid_unicode(json.loads(args)) if args.strip() else {}
        except json.JSONDecodeError as err:
            return ParsedCall(id=call_id, name=name, raw=raw, error=f"the arguments are not valid JSON ({err.msg})")
    return ParsedCall(id=str(obj.get("id") or call_id), name=name, arguments=args, raw=raw)


def parse_text_calls(text: str, turn: int) -> list[ParsedCall]:
    """Tool calls written in the text: ``<tool_call>{json}</tool_call>`` blocks (an unclosed last
    block counts: generation may stop at ``</tool_call>``), else a whole reply that is one JSON
    object with a ``name``."""
    calls: list[ParsedCall] = []
    blocks = _TAGGED.findall(text) if "<tool_call>" in text else []
    for i, blob in enumerate(blocks):
        cid = f"call_{turn}_{i}"
        try:
            obj = _decode(blob)
        except (json.JSONDecodeError, ValueError) as err:
            calls.append(ParsedCall(id=cid, raw=blob[:2000], error=f"the tool call is not valid JSON ({err})"))
            continue
        calls.append(_from_obj(obj, cid, blob[:2000]))
    if not blocks:
        stripped = text.strip()
        if stripped.startswith(("{", "```")):
            try:
                obj = _decode(stripped)
            except (json.JSONDecodeError, ValueError):
                return []
            if isinstance(obj, dict) and ("name" in obj or "function" in obj) and (
                    "arguments" in obj or "parameters" in obj or "function" in obj):
                calls.append(_from_obj(obj, f"call_{turn}_0", stripped[:2000]))
    return calls


def parse_native_calls(tool_calls: tuple[dict[str, Any], ...], turn: int) -> list[ParsedCall]:
    return [_from_obj(tc, f"call_{turn}_{i}", json.dumps(tc, default=str)[:2000]) for i, tc in enumerate(tool_calls)]


def strip_calls(text: str) -> str:
    """The reply without its tool-call blocks (what remains is prose)."""
    return _TAGGED.sub("", text).strip()


TEXT_PROTOCOL_PROMPT = """You can call tools. To call a tool, write exactly one line:
<tool_call>{{"name": "TOOL_NAME", "arguments": {{...}}}}</tool_call>
and stop; the result comes back in <tool_response>. Available tools:
{tools}"""


def describe_tools(schemas: list[dict[str, Any]]) -> str:
    lines = []
    for s in schemas:
        fn = s["function"]
        props = fn.get("parameters", {}).get("properties", {})
        args = ", ".join(f'"{k}": {v.get("type", "any")}' for k, v in props.items())
        lines.append(f'- {fn["name"]}({{{args}}}): {fn.get("description", "")}')
    return "\n".join(lines)


def text_protocol_prompt(schemas: list[dict[str, Any]]) -> str:
    return TEXT_PROTOCOL_PROMPT.format(tools=describe_tools(schemas))


def tool_response_text(name: str, content: str) -> str:
    return f'<tool_response name="{name}">\n{content}\n</tool_response>'


def template_supports_tools(provider: Any) -> bool:
    """Whether an hf provider's chat template renders ``tools`` (Hermes, Qwen, Llama 3.1, ...)."""
    tok = getattr(provider, "tokenizer", None)
    template = getattr(tok, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "tools" in template


def choose_protocol(setting: str, provider: Any) -> Protocol:
    if setting in ("native", "text"):
        return setting  # type: ignore[return-value]
    kind = getattr(getattr(provider, "identity", None), "provider", None)
    if kind == "hf" or hasattr(provider, "tokenizer"):
        return "native" if template_supports_tools(provider) else "text"
    if kind == "litellm":
        return "native"
    return getattr(provider, "default_protocol", "native")
