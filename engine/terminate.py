"""SIGTERM stops a run as Ctrl-C does (docs/architecture.md, "Records that are never lost").

A batch scheduler ends a job with SIGTERM (Slurm at its time limit or on preemption, `timeout`,
`docker stop`, Kubernetes), then SIGKILL a few seconds later. Python's default for SIGTERM ends the
process on the spot: the finished instances of the task running then were never recorded. Here
SIGTERM acts as the SIGINT handler in force when it arrives (asyncio's, which cancels the run's
main task; or the sandbox teardown's, which calls it after tearing sandboxes down), so the run
records what finished with status `interrupted` and exits 143 (128 + SIGTERM) with the resume hint.
A second SIGTERM interrupts at once, as a second Ctrl-C does.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_received = threading.Event()


def sigterm_as_interrupt() -> None:
    """Install the handler (from the main thread only: elsewhere nothing changes)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def terminated() -> bool:
    """Whether a SIGTERM arrived (the interrupt it raised was not a Ctrl-C)."""
    return _received.is_set()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _received.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt  # SIGINT ignored or at its C default: interrupt here
