"""A run's main task, and stopping it from a signal handler (docs/architecture.md, "Stopping a run").

`asyncio.run` installs its Ctrl-C handler (cancel the main task) only when SIGINT is at Python's
default. A run started in the background (`&` in a script, `nohup`, many schedulers) has SIGINT
ignored, so a SIGTERM that relied on that handler was lost: the run went on and exited 0.
`run_main` runs the experiment's coroutine and keeps a handle on its task; `request_stop` (called
by the CLI's SIGTERM handler, whatever SIGINT's disposition) cancels it as asyncio's Ctrl-C handler
does, so the run records what finished (status `interrupted`) and leaves through KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# (loop, main task, the loop's thread) of the run in progress; set and cleared on the loop's thread.
_main: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any], int] | None = None
_stopped = False


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` whose task `request_stop` can cancel; a stopped run raises KeyboardInterrupt
    (what asyncio raises for a Ctrl-C), after the coroutine has recorded what finished."""
    global _stopped
    _stopped = False

    async def tracked() -> T:
        global _main
        task = asyncio.current_task()
        assert task is not None
        _main = (asyncio.get_running_loop(), task, threading.get_ident())
        try:
            return await main
        finally:
            _main = None

    try:
        return asyncio.run(tracked())
    except asyncio.CancelledError:
        if _stopped:
            raise KeyboardInterrupt from None
        raise


def request_stop() -> bool:
    """Cancel the running main task (from a signal handler on the loop's thread). False
    when no run is in progress or a stop was already requested (the caller then interrupts at once)."""
    global _stopped
    target = _main
    if target is None or _stopped or target[1].done():
        return False
    _stopped = True
    loop, task, thread = target
    if thread != threading.get_ident():  # a run on another thread (the Python API): only the loop may cancel
        loop.call_soon_threadsafe(task.cancel)
        return True
    # As asyncio's own Ctrl-C handler: cancel now, in the handler, so that nothing the loop runs next
    # (a sandbox the teardown just killed reporting its exit) can finish as if it had not been stopped;
    # then wake the loop's selector.
    task.cancel()
    loop.call_soon_threadsafe(lambda: None)
    return True
