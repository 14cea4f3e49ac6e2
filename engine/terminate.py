"""SIGTERM stops a run as Ctrl-C does, whatever SIGINT's disposition (docs/architecture.md,
"Stopping a run").

A batch scheduler ends a job with SIGTERM (Slurm at its time limit or on preemption, `timeout`,
`docker stop`, Kubernetes), then SIGKILL a few seconds later. Python's default for SIGTERM ends the
process on the spot: the finished instances of the task running then were never recorded. Here
SIGTERM cancels the run's main task itself (`engine.runner.stop.request_stop`), as asyncio's Ctrl-C
handler does, so the run records what finished with status `interrupted` and exits 143 (128 +
SIGTERM) with the resume hint. It used to call the SIGINT handler in force instead, which a run
started in the background does not have (SIGINT ignored: `&` in a script, `nohup`, many
schedulers): the SIGTERM was lost and the run exited 0. Outside a run (composing the config,
writing the last records), and for a second SIGTERM, it interrupts at once, as a second Ctrl-C does.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from engine.runner.stop import request_stop

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
    if request_stop():
        return  # the run's main task is cancelled: it records what finished, then KeyboardInterrupt
    raise KeyboardInterrupt
