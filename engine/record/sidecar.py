"""MLflow in a helper process, off the run's critical path (docs/architecture.md, "MLflow off the
critical path").

Importing MLflow and opening a SQLite store cost ~2 s of CPU (MLflow's SQLAlchemy store module alone
~1 s), and a run paid them before its first request. A run with tracking on now starts one helper
process per store (engine/record/sidecar_server.py) before its configuration is read (the CLI) or
as soon as its experiment is valid (`session`); the helper imports MLflow and opens the store on the other core while the run computes, then executes
the tracking calls in the order they were sent: create the RUNNING run, log a run folder, close a run,
log a suite parent. The run's own process still writes the run folder first; the helper logs what the
folder says (it reads it back), so MLflow cannot say anything else.

A run killed outright (SIGKILL, OOM) closes the helper's stdin without the goodbye message: the
helper then ends every run it created and nobody finished as KILLED (status tag `killed`), at once
rather than when the next run's reaper finds the dead owner. The helper runs in its own session, so
a Ctrl-C at the terminal reaches only the run, which closes its runs through the helper as before.
If the helper cannot start or dies, each call runs in the run's own process (the earlier path); set
EVALBENCH_TRACKING_SIDECAR=0 to always do that.

Messages are pickles on the helper's stdin and stdout (a private pipe between two processes of one
user); errors come back as `TrackingCallError` with the original type's name and message.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config.schema import TrackingConfig

ENV_SWITCH = "EVALBENCH_TRACKING_SIDECAR"
GOODBYE = None


class TrackingCallError(Exception):
    """A tracking call that failed in the helper: `kind` is the original exception's type name."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (TrackingCallError, (self.kind, self.message))


class HelperGone(Exception):
    """The helper process ended before answering: the call is made in this process instead."""


# -- the run's side -------------------------------------------------------------------------------
class TrackingSidecar:
    """One helper process; `bind` names its store, `call` sends an operation and returns its future."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_package_root(), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.record.sidecar_server"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, start_new_session=True)
        self._lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._next = 0
        self.alive = True
        self.bound = False
        threading.Thread(target=self._read, name="evalbench-tracking-replies", daemon=True).start()

    def bind(self, tracking_uri: str) -> None:
        self._send(("store", tracking_uri))
        self.bound = True

    def call(self, op: str, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if not self.alive:
                future.set_exception(HelperGone("the tracking helper has ended"))
                return future
            self._next += 1
            self._pending[self._next] = future
            self._send_locked((self._next, op, args))
        return future

    def _send(self, message: Any) -> None:
        with self._lock:
            self._send_locked(message)

    def _send_locked(self, message: Any) -> None:
        if not self.alive:
            return
        try:
            assert self.proc.stdin is not None
            pickle.dump(message, self.proc.stdin)
            self.proc.stdin.flush()
        except (OSError, ValueError) as err:
            self._fail_all(f"the tracking helper's pipe closed ({err})")

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            try:
                call_id, ok, value = pickle.load(out)
            except Exception as err:  # noqa: BLE001 - EOF, a broken pipe, a reply that does not unpickle
                with self._lock:
                    self._fail_all(f"the tracking helper ended ({type(err).__name__})")
                return
            with self._lock:
                future = self._pending.pop(call_id, None)
            if future is not None:
                future.set_result(value) if ok else future.set_exception(value)

    def _fail_all(self, why: str) -> None:  # holds the lock
        self.alive = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HelperGone(why))
        self._pending.clear()

    def close(self) -> None:
        """Goodbye (nothing the helper created is then closed as killed), and wait for it to end; a
        helper that was never given a store has nothing to finish and is stopped at once."""
        if not self.bound:
            self.proc.kill()
        else:
            self._send(GOODBYE)
        with self._lock:
            self.alive = False
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])  # the folder holding `engine`


_helpers: dict[str, TrackingSidecar] = {}
_spare: list[TrackingSidecar] = []  # started before the store was known (engine/__main__.py)
_sessions = [0]
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") not in ("0", "false", "no")


def likely_tracked(argv: list[str]) -> bool:
    """Whether a command line will probably record to MLflow (a single run, tracking not switched
    off on it): worth starting the helper before its configuration is even read. A wrong guess costs a
    helper that is stopped once the configuration says otherwise."""
    off = ("tracking=none", "tracking.mlflow=false", "tracking.mlflow=False", "inspect=true", "inspect=True")
    return enabled() and not any(a.startswith("-") or a.replace(" ", "") in off for a in argv)


def start_spare() -> None:
    """Start a helper whose store is named later (`session`): MLflow loads while the config composes."""
    with _lock:
        if not _spare and not _helpers:
            try:
                _spare.append(TrackingSidecar())
            except OSError:
                return


@contextlib.contextmanager
def session(tracking: TrackingConfig) -> Iterator[None]:
    """The helpers' lifetime: started on entry when tracking is on (a spare is given the store, or
    stopped when tracking is off), all closed when the outermost session ends."""
    with _lock:
        _sessions[0] += 1
    try:
        if tracking.mlflow and enabled():
            helper(tracking.tracking_uri, start=True)
        else:
            _drop_spare()
        yield
    finally:
        with _lock:
            _sessions[0] -= 1
            last = _sessions[0] == 0
        if last:
            close_all()


def helper(tracking_uri: str, start: bool = False) -> TrackingSidecar | None:
    """The live helper of this store; with `start`, one is started (or a spare bound) when missing."""
    with _lock:
        found = _helpers.get(tracking_uri)
        if found is None and start:
            found = _spare.pop() if _spare else None
            if found is None:
                try:
                    found = TrackingSidecar()
                except OSError:
                    return None
            found.bind(tracking_uri)
            _helpers[tracking_uri] = found
        return found if found is not None and found.alive else None


def _drop_spare() -> None:
    with _lock:
        spare = list(_spare)
        _spare.clear()
    for h in spare:
        h.close()


def close_all() -> None:
    with _lock:
        helpers = [*_helpers.values(), *_spare]
        _helpers.clear()
        _spare.clear()
    for h in helpers:
        h.close()


atexit.register(close_all)  # a helper never outlives its run (no-op when none was started)


class PendingCall:
    """A tracking call sent to the helper; `result()` waits for it, and makes the call in this process
    when the helper died before answering."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], future: Future[Any]):
        self.fn, self.args, self.future = fn, args, future

    def result(self) -> Any:
        try:
            return self.future.result()
        except HelperGone:
            return self.fn(*self.args)


def operation_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def submit(fn: Callable[..., Any], tracking: TrackingConfig, *args: Any) -> PendingCall:
    """Send the call `fn(tracking, *args)` to the store's helper (inside a `session` one is started;
    the helper serves the functions listed in engine/record/sidecar_server.py); made in this process
    when there is none."""
    with _lock:
        in_session = _sessions[0] > 0
    found = helper(tracking.tracking_uri, start=in_session) if enabled() else None
    full = (tracking, *args)
    future = found.call(operation_name(fn), *full) if found is not None else _here(fn, full)
    return PendingCall(fn, full, future)


def call(fn: Callable[..., Any], tracking: TrackingConfig, *args: Any) -> Any:
    return submit(fn, tracking, *args).result()


def describe(err: BaseException) -> str:
    """`Type: message` of an error, the helper's included (cut to 300 characters)."""
    if isinstance(err, TrackingCallError):
        return f"{err.kind}: {err.message[:300]}"
    return f"{type(err).__name__}: {str(err)[:300]}"


def _here(fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
    future: Future[Any] = Future()
    try:
        future.set_result(fn(*args))
    except Exception as err:  # noqa: BLE001 - handed to the caller through the future
        future.set_exception(err)
    return future
