"""Nothing is left behind: an engine process running executions in local, bwrap and docker pools
ends normally, by an error, by SIGINT or by SIGTERM, and afterwards no sandbox process, work dir or
container of it exists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_testlib import backend_skip_reason, is_root

from engine.sandbox import _proc

REPO = Path(__file__).resolve().parents[2]
# Sandbox uids are leased machine-wide and every new router reaps the processes of unleased ones:
# another test starting sandboxes meanwhile would reap the SIGKILLed engine's leftovers, or lease
# a released uid and run processes under it. Run these alone (tests/conftest.py, `serial`).
pytestmark = pytest.mark.serial

SCRIPT = r'''
import asyncio, json, os, sys
from engine.sandbox import Demand, SandboxLimits, SandboxPoolConfig, SandboxRouter

mode, backends = sys.argv[1], sys.argv[2].split(",")
lim = SandboxLimits(wall_time_s=120, cpu_s=120)
caps = {"local": ["python"], "bwrap": ["bash"], "docker": ["image:evalbench-sandbox:latest"]}
pools = [SandboxPoolConfig(name=b, backend=b, provides=caps[b], instances=2, limits=lim)
         for b in backends]
demands = [Demand(requires=caps[b], instances=2) for b in backends]

async def main():
    async with SandboxRouter(pools, demands=demands) as router:
        assert {p: router.plan.size_of(p) for p in backends} == {b: 2 for b in backends}
        tasks = [asyncio.ensure_future(router.exec(caps[b], "sleep 1000 & sleep 1000"))
                 for b in backends for _ in range(2)]
        from engine.sandbox import _proc
        for _ in range(300):  # wait until every execution runs; under load starting takes a while
            sbs = [sb for pool in router.pools.values() for sb in pool._all]
            if all(_proc.live_pids(uid=sb.uid) for sb in sbs if getattr(sb, "uid", None)):
                break
            await asyncio.sleep(0.1)
        info = {"pid": os.getpid(), "uids": [], "workdirs": [], "containers": []}
        for pool in router.pools.values():
            for sb in pool._all:
                if getattr(sb, "uid", None) is not None:
                    info["uids"].append(sb.uid)
                    info["workdirs"].append(sb.workdir)
                if getattr(sb, "container_id", None):
                    info["containers"].append(sb.container_id)
        print(json.dumps(info), flush=True)
        if mode in ("normal", "error"):  # let the test look at the running processes first
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if mode == "error":
            raise RuntimeError("boom inside the run")
        if mode == "normal":
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return
        await asyncio.sleep(300)  # wait for the test's signal

asyncio.run(main())
'''


def _backends() -> list[str]:
    out = ["local", "bwrap", "docker"]
    return [b for b in out if backend_skip_reason(b) is None]


def _wait_until_gone(uids: list[int], timeout: float = 20.0) -> dict[int, list[int]]:
    """Live processes of these uids once none is left, or at the deadline. A SIGKILL is delivered
    asynchronously, so a killed process may stay listed for a moment; a busy machine needs longer."""
    deadline = time.monotonic() + timeout
    while True:
        left = {uid: pids for uid in uids if (pids := _proc.live_pids(uid=uid))}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _containers(ids: list[str]) -> list[str]:
    if not ids:
        return []
    from engine.sandbox.docker_backend import LABEL, client

    live = {c.id for c in client().containers.list(all=True, filters={"label": [LABEL]})}
    return [c for c in ids if c in live]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["normal", "error", "sigint", "sigterm"])
def test_no_process_or_container_survives(mode: str, tmp_path: Path) -> None:
    if not is_root():
        pytest.skip("verifying leftovers by dedicated uid needs root")
    backends = _backends()
    script = tmp_path / "engine_run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), mode, ",".join(backends)], cwd=REPO,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # SIGINT at its default, as at a terminal, even if a non-interactive
                            # parent (CI started in the background) left it ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        info = json.loads(line)
        # Sanity: the executions really run, in every backend.
        for uid in info["uids"]:
            assert _proc.live_pids(uid=uid), f"nothing running as uid {uid}"
        if "docker" in backends:
            assert len(_containers(info["containers"])) == 2
        assert proc.stdin is not None
        if mode in ("normal", "error"):
            proc.stdin.write("go\n")
            proc.stdin.flush()
        elif mode == "sigint":
            proc.send_signal(signal.SIGINT)
        elif mode == "sigterm":
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    expected_rc = {"normal": 0, "error": 1, "sigint": -signal.SIGINT,
                   "sigterm": -signal.SIGTERM}[mode]
    assert rc == expected_rc, stderr
    if mode == "error":
        assert "boom inside the run" in stderr
    if mode == "sigint":
        assert "KeyboardInterrupt" in stderr
    left = _wait_until_gone(info["uids"])
    assert not left, f"processes survived: {left}"
    assert not [d for d in info["workdirs"] if os.path.exists(d)]
    assert not _containers(info["containers"]), "containers survived"


@pytest.mark.slow
def test_leftovers_of_a_sigkilled_engine_are_reaped_by_the_next_run(tmp_path: Path) -> None:
    """SIGKILL allows no teardown: bwrap sandboxes die with their parent, local processes and
    docker containers stay behind until the next router starts, which removes them."""
    if not is_root():
        pytest.skip("verifying leftovers by dedicated uid needs root")
    import asyncio

    from engine.sandbox import Demand, SandboxPoolConfig, SandboxRouter

    backends = _backends()
    script = tmp_path / "engine_run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), "sigkill", ",".join(backends)],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    uids = dict(zip(info["uids"], ["local", "local", "bwrap", "bwrap"][: len(info["uids"])],
                    strict=False))
    # bwrap's --die-with-parent is a death signal, delivered asynchronously: wait for it.
    bwrap_left = _wait_until_gone([u for u, b in uids.items() if b == "bwrap"])
    assert not bwrap_left, f"bwrap must die with its parent: {bwrap_left}"
    local_left = [u for u, b in uids.items() if b == "local" and _proc.live_pids(uid=u)]
    assert local_left, "expected the local sleepers to outlive a SIGKILLed engine"
    if "docker" in backends:
        assert len(_containers(info["containers"])) == 2

    async def next_run() -> None:
        pools = [SandboxPoolConfig(name=b, backend=b, instances=1)  # type: ignore[arg-type]
                 for b in backends]
        async with SandboxRouter(pools, demands=[Demand(requires=["python"])]):
            pass
    asyncio.run(next_run())
    assert not _wait_until_gone(list(uids)), "the next run did not reap the leftovers"
    assert not _containers(info["containers"])
