"""A tool call's sandbox in flight is cancelled by a stop (docs/architecture.md, "Stopping a run").

SmolLM2 never calls a tool, so the model here is a scripted one (a test double: what is tested is
our tool loop's stop path): through `python -m engine` as users run it (the `console` entry point,
SIGINT ignored as in a background job), `harness=code_agent` with its model asking `python_exec` to
run a program that sleeps. Once that program runs in its sandbox (a local process, or a Docker
container), SIGTERM must end the run within 10 s with exit 143, the run recorded as interrupted,
and no sandbox process or container left behind (a cancelled execution's clean-up used to start a
fresh container after the teardown had removed the old one: it outlived the run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.test_agent_stop import EXIT_WITHIN_S, _scores, _stop

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# `python -m engine` with one change: the model asks for a sleeping program, every turn.
ENGINE = f"""import sys
sys.path.insert(0, {str(REPO)!r})
from tests.harness.test_tool_loop import ScriptedModel, call
import engine.runner.experiment as experiment
SLEEP = "import time\\nprint('sleeping', flush=True)\\ntime.sleep(3600)"
calls = []

def reply(req):  # the first question answers at once (a finished trajectory to record); the rest sleep
    calls.append(req)
    return call("submit", answer="def f(): pass") if len(calls) == 1 else call("python_exec", code=SLEEP)

experiment.build_provider = lambda cfg: ScriptedModel([reply])
from engine.__main__ import console
console()
"""


def descendants(pid: int) -> dict[int, str]:
    """pid → start time of every live process below `pid`."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append((int(name), fields[19]))
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child, start in parents.get(todo.pop(), []):
            out[child] = start
            todo.append(child)
    return out


def sleeper_running(pid: int) -> bool:
    """The scripted program runs in a local sandbox below the engine (`python3 main.py`)."""
    for child in descendants(pid):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"python3\0main.py"):
                return True
        except OSError:
            continue
    return False


def containers(owner_pid: int, running: bool = False) -> list[str]:
    """Sandbox containers this engine process owns (label evalbench.owner=<host>:<pid>)."""
    listed = subprocess.run(["docker", "ps", *([] if running else ["-a"]), "--filter", "label=evalbench.sandbox",
                             "--format", '{{.ID}} {{.Label "evalbench.owner"}}'],
                            capture_output=True, text=True, timeout=60).stdout
    return [line.split()[0] for line in listed.splitlines() if line.endswith(f":{owner_pid}")]


def sleeper_in_container(owner_pid: int) -> bool:
    for cid in containers(owner_pid, running=True):
        top = subprocess.run(["docker", "top", cid], capture_output=True, text=True, timeout=60).stdout
        if "main.py" in top:
            return True
    return False


def docker_ready() -> bool:
    try:
        return subprocess.run(["docker", "image", "inspect", "evalbench-sandbox:latest"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _running(pid: int, start: str) -> bool:
    """The same process (its start time), still running: a zombie (state Z) has ended and only waits for
    its new parent (the machine's init, once the engine is gone) to reap it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start and fields[0] != "Z"


# "default": the pool a harness naming none gets, the strongest backend here (bwrap on CI; docs/architecture.md, "Sandboxes")
@pytest.mark.parametrize("pool", ["default", "docker"])
def test_a_tool_calls_sandbox_in_flight_is_cancelled_within_10s(tmp_path, pool):
    if pool == "docker" and not docker_ready():
        pytest.skip("no Docker daemon with the sandbox image (scripts/setup_system.sh builds it)")
    script = tmp_path / "engine_with_scripted_model.py"
    script.write_text(ENGINE)
    args = ["task=humaneval", "harness=code_agent", "limit=2", "tracking.mlflow=false", "progress=false",
            f"cache.path={tmp_path / 'cache.sqlite'}", f"hydra.run.dir={tmp_path / 'runs' / 'first'}",
            "harness.max_turns=50"]  # the model keeps calling: a sleeper runs whenever the signal comes
    if pool == "docker":
        args.append("+harness/sandboxes=docker")
    proc = subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    below: dict[int, str] = {}

    def sleeping() -> bool:  # the sandboxed program runs: note every process below the engine then
        running = sleeper_running(proc.pid) if pool == "default" else sleeper_in_container(proc.pid)
        below.update(descendants(proc.pid) if running else {})
        return running

    exited, out, err = _stop(proc, sleeping, signal.SIGTERM)
    print(f"code_agent tool call ({pool}): SIGTERM -> exit {proc.returncode} in {exited:.2f} s")
    assert proc.returncode == 143, err[-3000:]
    assert exited < EXIT_WITHIN_S, f"exit took {exited:.1f} s after the signal\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    time.sleep(0.5)  # a killed process group is reaped by then
    alive = {p for p, start in below.items() if _running(p, start)}
    assert not alive, "sandboxed processes outlived the run: " + "; ".join(
        f"{p}: {Path(f'/proc/{p}/cmdline').read_bytes().replace(bytes(1), b' ').decode(errors='replace')}" for p in alive)
    if pool == "docker":
        assert not containers(proc.pid), "a sandbox container outlived the run"
    record, instances = _scores(tmp_path / "runs" / "first")
    assert record["status"] == "interrupted" and record["counts"]["n"] == 1 == len(instances)
