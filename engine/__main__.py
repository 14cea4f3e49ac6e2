"""`python -m engine`: the command line (engine/cli.py), ended without the interpreter's teardown.

Tearing down every imported module and the objects of a finished run takes 0.1-0.2 s, which is
much of what a cached re-run and the tail of an API run have left to cut. Everything a run writes
is closed by then, so once `main` returns this runs the exit handlers (MLflow, logging,
multiprocessing, weakref finalizers), flushes the standard streams and ends the process with the
same exit code. A live non-daemon thread, an exception or Ctrl-C take Python's normal exit instead
(docs/architecture.md, "Start-up and exit"). A reader that stops early (`| head`) ends the process
quietly with exit code 1, as Python's documentation recommends, instead of a BrokenPipeError traceback.
"""

import atexit
import os
import select
import sys
import threading

from engine.record import sidecar

if (__name__ == "__main__" or os.path.basename(sys.argv[0]) == "evalbench") and sidecar.likely_tracked(sys.argv[1:]):
    sidecar.start_spare()  # MLflow loads in its helper while the CLI imports and composes (0.6 s)

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


def stdout_closed() -> bool:
    """Whether the reader of stdout has gone (what a BrokenPipeError from `main` must mean to be
    treated as `| head`; one from a socket or a sandbox's pipe stays an error): poll reports an
    error on the write end of a pipe nobody reads."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll, or stdout is no file
        return False


def console() -> None:
    """`python -m engine` and the `evalbench` console script (pyproject.toml): the same behaviour and exit codes."""
    try:
        main()
    except SystemExit as stop:
        exit_now(stop.code)
    except BrokenPipeError:
        if not stdout_closed():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        exit_now(1)
    exit_now(None)


if __name__ == "__main__":
    console()
