"""`@tool`: a typed Python function becomes a tool the model can call.

    @tool(requires=["python"])
    async def python_exec(code: str, ctx: ToolContext) -> ToolResult:
        '''Run a Python program and return its output.

        Args:
            code: the complete program; print what you want to see.
        '''

The JSON schema comes from the type hints through pydantic, descriptions from the docstring
(first paragraph: the tool; an ``Args:`` section: the parameters). A parameter annotated
``ToolContext`` is injected, never shown to the model. Arguments are validated before the call;
invalid arguments, unknown tools and exceptions inside a tool come back as a failed
``ToolResult`` that the scaffold feeds to the model, never as a crash of the run.

The registry (``TOOLS``) lets YAML name tools: ``harness.tools: [search, submit]``; a user's tools
register the same way once their module is imported (``imports: [mypkg.tools]`` or an entry point
of group ``evalbench.plugins``; docs/architecture.md, "Extensions"). Two tools under one name are
an error naming both definitions.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from engine.config import names
from engine.config.errors import ConfigError
from engine.sandbox import SandboxError, SandboxUnavailableError
from engine.types import Registry, TrajectoryStep, origin_of


class ToolResult(BaseModel):
    """What a tool returns to the model (``content``) and to the record (the rest)."""

    model_config = ConfigDict(frozen=True)

    content: str
    ok: bool = True
    error: str | None = None  # kind: invalid_arguments, unknown_tool, tool_error, capability, ...
    final: bool = False  # `submit`: the trajectory ends with `content` as the answer
    data: dict[str, Any] = {}


@dataclass
class ToolContext:
    """What a tool may use: sandboxes (through the router), its options, the step recorder."""

    options: dict[str, Any] = field(default_factory=dict)
    router: Any = None  # engine.sandbox.SandboxRouter | None
    steps: list[TrajectoryStep] = field(default_factory=list)
    tool_name: str = ""
    deadline: float | None = None  # time.monotonic() by which the trajectory must end

    def granted(self, requires: Iterable[str]) -> bool:
        """Whether some sandbox pool covers ``requires``."""
        if self.router is None:
            return False
        try:
            return self.router.route(list(requires)) is not None
        except Exception:  # noqa: BLE001 - NoPoolError and friends: not granted
            return False

    async def exec(self, requires: Iterable[str], command: Any, *, files: dict[str, str] | None = None,
                   stdin: str | None = None, timeout_s: float | None = None):
        """Run ``command`` in the cheapest pool covering ``requires``; records a sandbox step."""
        if self.router is None:
            raise ToolFailure("capability", f"tool {self.tool_name!r} needs a sandbox providing "
                              f"{sorted(requires)}, and this harness has no sandbox pools")
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ToolFailure("max_time", "the trajectory's time limit was reached")
            if timeout_s is None:
                pool = self.router.route(list(requires))
                timeout_s = pool.limits.wall_time_s if pool is not None else left
            timeout_s = min(timeout_s, left)
        started, t0 = time.time(), time.monotonic()
        try:
            result = await self.router.exec(list(requires), command, stdin=stdin, files=files, timeout_s=timeout_s)
        except SandboxError as err:
            self.steps.append(TrajectoryStep(type="sandbox", started=started, duration_s=time.monotonic() - t0,
                                             content={"tool": self.tool_name, "error": str(err)[:1000]}))
            if isinstance(err, SandboxUnavailableError):
                raise  # no host can run it: the instance is an error, not the model's observation
            raise ToolFailure("sandbox_error", f"the sandbox failed: {err}") from err
        except Exception as err:  # NoPoolError etc.
            raise ToolFailure("capability", f"{type(err).__name__}: {err}") from err
        self.steps.append(TrajectoryStep(
            type="sandbox", started=started, duration_s=round(time.monotonic() - t0, 6),
            content={
                "tool": self.tool_name, "pool": result.pool, "backend": result.backend,
                "command": command if isinstance(command, str) else list(command),
                "files": sorted(files or {}), "exit_code": result.exit_code,
                "ok": result.ok, "reason": result.reason, "timed_out": result.timed_out,
                "stdout": result.stdout[:4000], "stderr": result.stderr[:4000],
                "truncated": result.truncated,
            },
        ))
        return result


class ToolFailure(Exception):
    """Raised inside a tool to return an error to the model (``kind`` is recorded)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Examples?|Notes?)\s*:\s*$")
_ARG_LINE = re.compile(r"^(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style docstring."""
    if not doc:
        return "", {}
    desc: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    base: int | None = None
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        m = _SECTION.match(line)
        if m:
            section, base, current = m.group(1), None, None
            continue
        if section is None:
            desc.append(line)
            continue
        if section not in ("Args", "Arguments", "Parameters") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if base is None:
            base = indent
        arg = _ARG_LINE.match(line.strip())
        if indent == base and arg:
            current = arg.group(1)
            params[current] = arg.group(3).strip()
        elif indent > base and current:
            params[current] = (params[current] + " " + line.strip()).strip()
    first = "\n".join(desc).strip().split("\n\n")[0].replace("\n", " ").strip()
    return first, params


class Tool:
    """A callable tool: name, description, JSON schema, required capabilities."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                 requires: Iterable[str] = ()):
        self.fn = fn
        self.name = name or fn.__name__
        doc_desc, doc_params = parse_docstring(fn.__doc__)
        self.description = description or doc_desc or self.name
        self.requires = frozenset(requires)
        hints = get_type_hints(fn)
        self._ctx_param: str | None = None
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(fn).parameters.items():
            ann = hints.get(pname, Any)
            if ann is ToolContext:
                self._ctx_param = pname
                continue
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[pname] = (ann, Field(default, description=doc_params.get(pname)))
        self.args_model: type[BaseModel] = create_model(
            f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields
        )

    @property
    def parameters(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        return schema

    def schema(self) -> dict[str, Any]:
        """OpenAI function-calling format (what litellm and HF chat templates take)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    async def __call__(self, arguments: Any, ctx: ToolContext) -> ToolResult:
        """Validate ``arguments`` (a dict or a JSON string) and run; every failure is a ToolResult."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as err:
                return ToolResult(ok=False, error="invalid_arguments",
                                  content=f"error: the arguments of {self.name} are not valid JSON ({err.msg}).")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return ToolResult(ok=False, error="invalid_arguments",
                              content=f"error: the arguments of {self.name} must be a JSON object, "
                                      f"got {type(arguments).__name__}.")
        try:
            args = self.args_model.model_validate(arguments)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                                 for e in err.errors())
            expected = ", ".join(self.parameters.get("properties", {}))
            return ToolResult(ok=False, error="invalid_arguments",
                              content=f"error: invalid arguments for {self.name}: {problems}. "
                                      f"Expected parameters: {expected or 'none'}.")
        kwargs = dict(args)
        if self._ctx_param:
            kwargs[self._ctx_param] = ctx
        ctx.tool_name = self.name
        try:
            out = self.fn(**kwargs)
            if inspect.isawaitable(out):
                out = await out
        except ToolFailure as err:
            return ToolResult(ok=False, error=err.kind, content=f"error: {err}")
        except (asyncio.CancelledError, SandboxUnavailableError):
            raise
        except Exception as err:  # noqa: BLE001 - a tool bug is the model's observation, not a crash
            return ToolResult(ok=False, error="tool_error", content=f"error: {self.name} failed: "
                                                                    f"{type(err).__name__}: {err}")
        if isinstance(out, ToolResult):
            return out
        return ToolResult(content=out if isinstance(out, str) else json.dumps(out, default=str))

    def __repr__(self) -> str:
        return f"<Tool {self.name} requires={sorted(self.requires)}>"


TOOLS: Registry[Tool] = Registry("tool", "@tool", ConfigError, on_add=lambda name, t: names.declare(
    "tool", name, origin=origin_of(t.fn)))


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
         requires: Iterable[str] = (), register: bool = True):
    """Decorator: ``@tool`` or ``@tool(name=..., requires=[...], register=False)`` → a ``Tool``."""

    def wrap(f: Callable[..., Any]) -> Tool:
        t = Tool(f, name=name, description=description, requires=requires)
        if register:
            TOOLS.add(t.name, t, origin=origin_of(f))
        return t

    return wrap(fn) if fn is not None else wrap


def get_tool(name: str) -> Tool:
    """A registered tool (the built-ins register when `engine.harness` is imported); ConfigError
    naming the closest tools and how to register one otherwise."""
    return TOOLS.get(name, "`harness.tools`")


def resolve_tools(names: Iterable[str]) -> list[Tool]:
    return [get_tool(n) for n in names]
