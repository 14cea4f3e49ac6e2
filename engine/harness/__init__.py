"""Harness: scaffolds (single_turn, tool_loop, multi_turn), tools (`@tool`, registry, built-ins),
the LLM judge. See engine/harness/run.py for how the runner hands instances to a scaffold."""

from engine.harness.protocol import ParsedCall, choose_protocol, parse_text_calls
from engine.harness.scaffolds import SCAFFOLDS, ModelCaller, MultiTurn, SingleTurn, ToolLoop, Trajectory
from engine.harness.tools import TOOLS, Tool, ToolContext, ToolFailure, ToolResult, get_tool, resolve_tools, tool

__all__ = [
    "SCAFFOLDS", "TOOLS", "ModelCaller", "MultiTurn", "ParsedCall", "SingleTurn", "Tool", "ToolContext",
    "ToolFailure", "ToolLoop", "ToolResult", "Trajectory", "choose_protocol", "get_tool", "parse_text_calls",
    "resolve_tools", "tool",
]
