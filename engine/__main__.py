"""`python -m engine`: the command line (engine/cli.py), ended without the interpreter's teardown.

Tearing down every imported module and the objects of a finished run takes 0.1-0.2 s, which is
much of what a cached re-run and the tail of an API run have left to cut. Everything a run writes
is closed by then, so once `main` returns this runs the exit handlers (MLflow, logging,
multiprocessing, weakref finalizers), flushes the standard streams and ends the process with the
same exit code. A live non-daemon thread, an exception or Ctrl-C take Python's normal exit instead
(docs/architecture.md, "Start-up and exit").
"""

import atexit
import os
import sys
import threading

from engine.cli import main


def exit_code(status: object) -> int:
    """The process exit code `sys.exit(status)` gives: None is 0, an int itself, anything else is
    printed to stderr and gives 1."""
    if status is None:
        return 0
    if isinstance(status, int):
        return status & 0xFF
    print(status, file=sys.stderr)
    return 1


def exit_now(status: str | int | None) -> None:
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)  # Python joins these threads first: its own exit path
    code = exit_code(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing left to write to
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as stop:
        exit_now(stop.code)
    exit_now(None)
