"""SIGTERM cancels a run's main task whatever SIGINT's disposition (engine/terminate.py,
engine/runner/stop.py; docs/architecture.md, "Stopping a run"). Fast: a small child process runs a
coroutine the way the CLI runs an experiment, with the sandbox teardown's handlers installed as
while pools are open, and the test signals it. (With SIGINT ignored, SIGTERM used to go through
the teardown's SIGINT handler to SIG_IGN and be lost.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO

CHILD = textwrap.dedent("""
    import asyncio, sys
    from engine.runner.stop import run_main
    from engine.sandbox.teardown import signal_teardown
    from engine.terminate import sigterm_as_interrupt, terminated

    sigterm_as_interrupt()

    async def run():
        try:
            with signal_teardown():  # as while sandbox pools are open: its handlers chain to ours
                print("started", flush=True)
                await asyncio.sleep(120)
        except asyncio.CancelledError:
            print("cancelled: recording what finished", flush=True)
            raise
        print("finished", flush=True)

    try:
        run_main(run())
    except KeyboardInterrupt:
        print(f"interrupted, terminated={terminated()}", flush=True)
        sys.exit(143 if terminated() else 130)
""")


def _child(sigint: signal.Handlers) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    return proc


@pytest.mark.parametrize("sigint", [signal.SIG_IGN, signal.SIG_DFL], ids=["sigint-ignored", "sigint-default"])
def test_sigterm_cancels_the_run_and_it_records_what_finished(sigint):
    proc = _child(sigint)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert out.splitlines() == ["cancelled: recording what finished", "interrupted, terminated=True"], err
    assert time.monotonic() - sent < 10


def test_ctrl_c_still_interrupts_and_an_ignored_sigint_stays_ignored():
    proc = _child(signal.SIG_DFL)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and out.splitlines()[-1] == "interrupted, terminated=False", err
    proc = _child(signal.SIG_IGN)  # a background job: Ctrl-C at the terminal is not for it
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
