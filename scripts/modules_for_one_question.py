"""The engine modules that run code for one MMLU question (issue 25's measure of how much a reader
must hold): `python -m engine task=mmlu limit=1` in this process, with a profile hook on every thread
that records the module of each Python function called (import-time module and class bodies
are not counted). Prints the count and the modules.

    python scripts/modules_for_one_question.py [overrides...]     # default: task=mmlu limit=1
"""

from __future__ import annotations

import atexit
import inspect
import runpy
import sys
import threading
from types import FrameType
from typing import Any

seen: set[str] = set()


def _hook(frame: FrameType, event: str, arg: Any) -> None:
    # Functions only: a module's or a class body's code runs once at import (no CO_NEWLOCALS).
    if event == "call" and frame.f_code.co_flags & inspect.CO_NEWLOCALS:
        name = frame.f_globals.get("__name__", "")
        if name == "engine" or name.startswith("engine."):
            seen.add(name)


def _report() -> None:
    sys.setprofile(None)
    threading.setprofile(None)
    print(f"\n{len(seen)} engine modules ran code:", file=sys.stderr)
    for name in sorted(seen):
        print(f"  {name}", file=sys.stderr)


def main() -> int:
    args = sys.argv[1:] or ["task=mmlu", "limit=1"]
    sys.argv = ["engine", *args]
    # engine/__main__.py runs the atexit functions itself, then os._exit (docs/architecture.md,
    # "Stopping a run"): the report is one of them.
    atexit.register(_report)
    threading.setprofile(_hook)
    sys.setprofile(_hook)
    runpy.run_module("engine", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
