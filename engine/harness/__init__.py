"""Harness: scaffolds (tool_loop, multi_turn, openai_agents), tools (`@tool`, registry, built-ins).

`engine.harness.build` binds a harness config to a run; the runner core drives it.
"""

from engine.harness import (
    builtin,  # noqa: F401 - registers the built-in tools
    openai_agents,  # noqa: F401 - registers the scaffold `openai_agents`
)
from engine.harness.protocol import ParsedCall, choose_protocol, parse_text_calls
from engine.harness.scaffolds import SCAFFOLDS, ModelCall, MultiTurn, ToolLoop, Trajectory, scaffold
from engine.harness.tools import TOOLS, Tool, ToolContext, ToolFailure, ToolResult, get_tool, resolve_tools, tool

__all__ = [
    "SCAFFOLDS", "TOOLS", "ModelCall", "MultiTurn", "ParsedCall", "Tool", "ToolContext",
    "ToolFailure", "ToolLoop", "ToolResult", "Trajectory", "choose_protocol", "get_tool", "parse_text_calls",
    "resolve_tools", "scaffold", "tool",
]
