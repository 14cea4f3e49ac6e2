"""The tracking helper process: `python -m engine.record.sidecar_server` (docs/architecture.md, "MLflow
off the critical path"; the run's side is engine/record/sidecar.py).

It imports MLflow before its store is even named, then serves the calls in the order they were sent:
only the functions in OPERATIONS, each answered with its value or a `TrackingCallError`. When its
stdin closes without the goodbye (the run's process died), and at the goodbye too, it closes every
run it created that was neither logged nor closed as KILLED (status tag `killed`), then ends.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from engine.config.schema import TrackingConfig
from engine.record import store
from engine.record.mlflow_writer import close_mlflow_run, start_mlflow_run
from engine.record.publish import log_run_folder
from engine.record.sidecar import GOODBYE, TrackingCallError, operation_name
from engine.record.suite import log_suite_run

OPERATIONS: dict[str, Callable[..., Any]] = {
    operation_name(fn): fn for fn in (start_mlflow_run, log_run_folder, close_mlflow_run, log_suite_run)
}


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    open_runs: dict[str, TrackingConfig] = {}  # created here, not yet logged or closed
    while True:
        try:
            message = pickle.load(inp)
        except (EOFError, OSError, pickle.UnpicklingError):
            break  # the run's process is gone without a goodbye
        if message is GOODBYE:
            break  # the run's process is done: what it left open will not be finished by anyone
        if message[0] == "store":
            warm(message[1])
            continue
        call_id, name, args = message
        try:
            value = OPERATIONS[name](*args)
            reply = (call_id, True, value)
        except Exception as err:  # noqa: BLE001 - every error goes back to the caller
            reply = (call_id, False, TrackingCallError(type(err).__name__, str(err)))
        if reply[1]:
            note(open_runs, OPERATIONS[name], args, value)
        try:
            pickle.dump(reply, out)
            out.flush()
        except OSError:  # the run's process is gone
            break
    for run_id, tracking in open_runs.items():  # killed: say so now, as the reaper would later
        try:
            close_mlflow_run(tracking, run_id, "killed")
        except Exception:  # noqa: BLE001 - the next run's reaper closes it
            pass


def note(open_runs: dict[str, TrackingConfig], fn: Callable[..., Any], args: tuple[Any, ...], value: Any) -> None:
    """Which runs this helper created are still open, after a call that succeeded."""
    if fn is start_mlflow_run:
        open_runs[str(value)] = args[0]
    elif fn is close_mlflow_run:
        open_runs.pop(str(args[1]), None)
    elif fn is log_run_folder:
        open_runs.pop(str(value), None)


def warm(tracking_uri: str) -> None:
    """Open the store before the first call arrives (the point of the helper)."""
    try:
        store.client(tracking_uri)
    except Exception:  # noqa: BLE001 - the first call meets the same error and reports it
        pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run decides when tracking stops
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    import mlflow  # noqa: F401 - the slow part, before the store is even named
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401

    serve(inp, out)
    sys.stderr.flush()
    os._exit(0)  # nothing left to tear down: the run's process waits for this


if __name__ == "__main__":
    main()
