"""Nothing outlives the engine: a registry of live sandboxes, atexit and SIGINT/SIGTERM teardown.

Every started sandbox registers itself; ``teardown_all_sync`` kills them all synchronously (safe
from a signal handler or ``atexit``). ``signal_teardown`` installs handlers that tear down and
then chain to the previous handler (asyncio's SIGINT handler cancels the main task, the default
SIGTERM action terminates the process), and restores them afterwards.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger(__name__)


class _Killable(Protocol):
    def kill_sync(self) -> None: ...


class _Registry:
    def __init__(self) -> None:
        self._live: dict[int, _Killable] = {}
        self._lock = threading.Lock()
        self._atexit = False

    def add(self, sb: _Killable) -> None:
        with self._lock:
            self._live[id(sb)] = sb
            if not self._atexit:
                atexit.register(teardown_all_sync)
                self._atexit = True

    def discard(self, sb: _Killable) -> None:
        with self._lock:
            self._live.pop(id(sb), None)

    def snapshot(self) -> list[_Killable]:
        with self._lock:
            return list(self._live.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)


REGISTRY = _Registry()


def teardown_all_sync() -> int:
    """Kill every live sandbox of this process; returns how many were torn down."""
    n = 0
    for sb in REGISTRY.snapshot():
        try:
            sb.kill_sync()
            n += 1
        except Exception:  # teardown must go on
            log.exception("sandbox teardown failed for %r", sb)
    return n


_Handler = Any  # signal handler: callable, SIG_DFL, SIG_IGN or None


@contextlib.contextmanager
def signal_teardown(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While active, SIGINT/SIGTERM first tear every sandbox down, then act as before."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be installed from the main thread; atexit still covers us
        return
    previous: dict[int, _Handler] = {}

    def _handler(signum: int, frame: FrameType | None) -> None:
        teardown_all_sync()
        prev = previous.get(signum, signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_IGN:
            return
        else:  # default action: restore it and re-deliver the signal to ourselves
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for s in signals:
        try:
            if signal.getsignal(s) == signal.SIG_IGN:
                continue  # an ignored signal stays ignored (a background run's SIGINT): no teardown either
            previous[s] = signal.getsignal(s)
            signal.signal(s, _handler)
        except (ValueError, OSError):
            previous.pop(s, None)
    try:
        yield
    finally:
        for s, prev in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(s) is _handler:
                    signal.signal(s, prev if prev is not None else signal.SIG_DFL)
