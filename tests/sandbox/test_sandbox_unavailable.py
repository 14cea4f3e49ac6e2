"""Sandbox infrastructure failures are errors, never crashes nor scores (docs/architecture.md, "Sandboxes").

Through `python -m engine` with a real Docker engine: no usable host at the start is exit 2 before
the model is built or called; a daemon that goes away mid-run (a proxy to the real daemon that
stops after N executions, `docker_fault_proxy.py`) makes the executions that did not run errors of
kind `sandbox_unavailable`, the run finishes with exit 3, and the same command run again resumes;
with a second healthy host the lost host's executions are retried there.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_fault_proxy import DockerFaultProxy, remove_pool_containers, socket_dir
from sandbox_testlib import backend_skip_reason

from tests.conftest import run_engine

HUMANEVAL = ["task=humaneval", "limit=4", "task.generation.max_tokens=128", "tracking.mlflow=false", "progress=false"]
DOCKER_POOL = ["+harness/sandboxes=docker", "harness.sandboxes.0.instances=1"]


@pytest.fixture(scope="module", autouse=True)
def _sockets() -> Iterator[None]:
    yield
    shutil.rmtree(socket_dir(), ignore_errors=True)


def _refusal(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr  # one paragraph
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def model_server() -> Iterator[tuple[socket.socket, str]]:
    """A listening socket standing in for a model server: any probe or request would connect to it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv, f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
    srv.close()


def _connections(srv: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = srv.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


@pytest.mark.parametrize("docker_host", ["unix:///tmp/evalbench-no-such-daemon.sock", "tcp"], ids=["socket-missing", "refused"])
def test_no_reachable_docker_daemon_is_exit_2_before_any_model_call(tmp_path: Path, docker_host: str,
                                                                    model_server: tuple[socket.socket, str]) -> None:
    srv, api_base = model_server
    url = f"tcp://127.0.0.1:{_free_port()}" if docker_host == "tcp" else docker_host
    proc = run_engine([*HUMANEVAL, *DOCKER_POOL, "model=litellm", "model.name=openai/smollm2", f"model.api_base={api_base}",
                       f"output_dir={tmp_path / 'runs'}"], cwd=tmp_path, env={"DOCKER_HOST": url}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    msg = _refusal(proc.stderr)
    assert "Sandbox pool 'py' (backend docker) cannot start a sandbox" in msg
    assert f"docker host {url} (DOCKER_HOST): daemon not reachable" in msg
    assert "The task humaneval runs its completions' tests there" in msg
    assert "Fix: start the Docker daemon" in msg and "+harness/sandboxes=bwrap" in msg
    # The refusal came before the provider was probed: nothing ever connected to the model server.
    assert _connections(srv) == 0
    assert not (tmp_path / "runs" / "humaneval").exists()
    assert not (tmp_path / ".cache").exists()  # no response cache opened, nothing computed


def test_a_tool_harness_on_a_dead_daemon_names_its_tools_and_the_model_is_not_loaded(tmp_path: Path) -> None:
    proc = run_engine(["task=gsm8k", "limit=2", "harness=code_agent", *DOCKER_POOL, "tracking.mlflow=false",
                       "progress=false", f"output_dir={tmp_path / 'runs'}"], cwd=tmp_path,
                      env={"DOCKER_HOST": "unix:///tmp/evalbench-no-such-daemon.sock"}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    msg = _refusal(proc.stderr)
    assert "The harness code_agent runs its tools python_exec, bash there" in msg
    assert "before loading the model" in msg
    assert not (tmp_path / ".cache").exists() and not (tmp_path / "runs" / "gsm8k").exists()


def test_a_bwrap_that_cannot_start_a_sandbox_is_exit_2(tmp_path: Path) -> None:
    """bwrap installed but not working (e.g. user namespaces off): a real probe, not `which bwrap`."""
    fake = socket_dir() / "bin" / "bwrap"  # where the sandbox uid may run it (pytest's tmp_path is 0700)
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = run_engine([*HUMANEVAL, "+harness/sandboxes=bwrap", f"output_dir={tmp_path / 'runs'}"], cwd=tmp_path,
                      env={"PATH": f"{fake.parent}:{os.environ['PATH']}"}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    msg = _refusal(proc.stderr)
    assert "Sandbox pool 'py' (backend bwrap) cannot start a sandbox: bwrap cannot run a command" in msg
    assert "Permission denied" in msg and "Fix: install bubblewrap" in msg
    assert not (tmp_path / ".cache").exists()


# -- a daemon lost mid-run (real Docker behind a proxy that stops) ----------------------------------

@pytest.fixture(scope="module")
def shared_cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One working directory (one response cache) for the mid-run tests: SmolLM2 generates once."""
    if (why := backend_skip_reason("docker")) is not None:
        pytest.skip(why)
    return tmp_path_factory.mktemp("lost-host")


@pytest.fixture
def proxies() -> Iterator[list[DockerFaultProxy]]:
    made: list[DockerFaultProxy] = []
    yield made
    for p in made:
        p.stop()
    remove_pool_containers(f"lost-{os.getpid()}")  # created through a proxy that died: left on the daemon


def _instances(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "instances.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_a_daemon_lost_mid_run_errors_what_did_not_run_and_a_rerun_resumes(shared_cwd: Path, proxies) -> None:
    sock = socket_dir() / "mid.sock"
    proxies.append(DockerFaultProxy(sock, executions=2).start())
    pool = f"lost-{os.getpid()}"
    out = shared_cwd / "mid"
    args = [*HUMANEVAL, *DOCKER_POOL, f"harness.sandboxes.0.name={pool}", f"output_dir={out}"]
    proc = run_engine(args, cwd=shared_cwd, env={"DOCKER_HOST": proxies[0].url})
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    recs = _instances(out / "humaneval")
    scored = [r for r in recs if r["error"] is None]
    errored = [r for r in recs if r["error"] is not None]
    # One sandbox (instances=1): executions run one at a time, the daemon stopped at the third.
    assert len(scored) == 2 and len(errored) == 2, recs
    assert all("pass" in r["scores"] and r["trajectory"][-1]["type"] == "sandbox" for r in scored)
    for r in errored:
        assert r["error"]["kind"] == "sandbox_unavailable"
        assert "the execution did not run" in r["error"]["message"] and "daemon not reachable" in r["error"]["message"]
        assert r["scores"] == {}  # never a 0 for an execution that did not run
        assert r["output_text"] is not None  # the completion is kept
    assert json.loads((out / "humaneval" / "metrics.json").read_text())  # recorded

    # The daemon is back: the same command scores everything, the completions come from the cache.
    proxies.append(DockerFaultProxy(sock).start())
    again = run_engine(args, cwd=shared_cwd, env={"DOCKER_HOST": proxies[1].url})
    assert again.returncode == 0, again.stderr
    recs = _instances(out / "humaneval")
    assert len(recs) == 4 and all(r["error"] is None and "pass" in r["scores"] for r in recs)
    assert all(r["cached"] for r in recs)
    assert proxies[1].seen == 4


@pytest.mark.slow
def test_executions_of_a_lost_host_are_retried_on_the_healthy_one(shared_cwd: Path, proxies) -> None:
    lost = DockerFaultProxy(socket_dir() / "a.sock", executions=0).start()  # dies at its first execution
    healthy = DockerFaultProxy(socket_dir() / "b.sock").start()
    proxies.extend([lost, healthy])
    out = shared_cwd / "two"
    proc = run_engine([*HUMANEVAL, "+harness/sandboxes=docker_hosts", f"harness.sandboxes.0.docker_hosts=[{lost.url},{healthy.url}]",
                       "harness.sandboxes.0.instances=2", f"harness.sandboxes.0.name=lost-{os.getpid()}", f"output_dir={out}"],
                      cwd=shared_cwd)
    assert proc.returncode == 0, proc.stderr
    assert f"docker host {lost.url} of sandbox pool 'lost-{os.getpid()}' is taken out: daemon not reachable" in proc.stderr
    recs = _instances(out / "humaneval")
    assert len(recs) == 4 and all(r["error"] is None and "pass" in r["scores"] for r in recs)
    assert lost.seen == 1 and healthy.seen == 4  # the lost host's execution ran again on the healthy one
    assert {r["trajectory"][-1]["content"]["host"] for r in recs} == {healthy.url}


def test_a_tool_loop_whose_daemon_is_lost_ends_in_an_error_the_model_never_sees(proxies) -> None:
    """python_exec on a host that went away: the trajectory is an error, not a tool result to the model."""
    if (why := backend_skip_reason("docker")) is not None:
        pytest.skip(why)
    from engine.config.schema import HarnessConfig
    from engine.sandbox import Demand, SandboxPoolConfig, SandboxRouter
    from tests.harness.test_tool_loop import Bound, ScriptedModel, call, request

    proxy = DockerFaultProxy(socket_dir() / "tool.sock", executions=1).start()
    proxies.append(proxy)
    pool = SandboxPoolConfig(name=f"lost-{os.getpid()}", backend="docker", instances=1, docker_hosts=[proxy.url])
    h = HarnessConfig(name="t", scaffold="tool_loop", tools=["python_exec", "submit"], max_turns=5, retry_backoff_s=0.0)
    model = ScriptedModel([call("python_exec", code="print(6 * 7)"), call("python_exec", code="print(1)"),
                           call("submit", answer="42")])

    async def go():  # type: ignore[no-untyped-def]
        async with SandboxRouter([pool], demands=[Demand(requires=["python"])]) as router:
            return await Bound(h, model, router).run(request())

    traj = asyncio.run(go())
    assert traj.end_reason == "error" and traj.response is None
    assert traj.error is not None and traj.error.kind == "sandbox_unavailable"
    assert len(model.requests) == 2  # the model never got the failure as an observation
    results = [s.content for s in traj.steps if s.type == "tool_result"]
    assert len(results) == 1 and "42" in results[0]["content"]  # the first execution ran
    assert "daemon not reachable" in [s.content for s in traj.steps if s.type == "sandbox"][-1]["error"]


@pytest.mark.parametrize("hosts", [(), ("unix:///tmp/evalbench-no-such-daemon.sock",)], ids=["default-host", "docker_hosts"])
def test_pools_that_cannot_start_open_anyway_and_every_execution_is_unavailable(hosts, monkeypatch,
                                                                                request: pytest.FixtureRequest) -> None:
    """A daemon lost between the pre-flight check and the pools' start: opening them does not raise
    (the run would crash after generating everything); each execution is a typed error."""
    from engine.sandbox import Demand, SandboxPoolConfig, SandboxRouter, SandboxUnavailableError
    from engine.sandbox.docker_backend import client

    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/evalbench-no-such-daemon.sock")
    client.cache_clear()  # one client per host per process: the default one is made again from DOCKER_HOST
    request.addfinalizer(client.cache_clear)  # and again without it, for the tests after this one
    pool = SandboxPoolConfig(name="gone", backend="docker", instances=2, docker_hosts=hosts)

    async def go() -> list[BaseException]:
        async with SandboxRouter([pool], demands=[Demand(requires=["python"], instances=3)]) as router:
            out = await asyncio.gather(*(router.exec(["python"], ["true"]) for _ in range(3)), return_exceptions=True)
        return [e for e in out if isinstance(e, BaseException)]

    errors = asyncio.run(go())
    assert len(errors) == 3 and all(isinstance(e, SandboxUnavailableError) for e in errors), errors
    assert all(e.kind == "sandbox_unavailable" and "daemon not reachable" in str(e) for e in errors)


def test_a_tool_no_pool_provides_is_left_out_of_the_demand_instead_of_crashing() -> None:
    """bash on pools that provide only python: not granted (the model is told), never a NoPoolError."""
    from engine.config.schema import HarnessConfig
    from engine.harness.build import sandbox_resources

    h = HarnessConfig(name="t", scaffold="tool_loop", tools=["python_exec", "bash", "submit"],
                      sandboxes=[{"name": "py", "backend": "local", "provides": ["python"]}])
    open_pools = sandbox_resources(h)
    assert open_pools is not None
    router = open_pools(2)
    assert [d.requires for d in router.demands] == [frozenset({"python"})]
    assert router.covers(["python"]) and not router.covers(["bash"])


def test_scoring_by_execution_alone_never_loads_the_model(tmp_path: Path) -> None:
    """A re-run whose completions are all cached only executes: the model is not warmed (loaded) for it."""
    from engine.config.compose import compose_task
    from engine.config.schema import Experiment, ModelConfig, TrackingConfig
    from engine.runner.cache import ResultCache
    from engine.runner.core import RunnerCore
    from engine.runner.task_run import score_by_execution
    from engine.tasks import build_task
    from engine.types import InstanceRecord, ModelIdentity

    class NoModel:
        identity = ModelIdentity(name="unloadable", provider="test", content_hash="x")
        max_batch = 1
        warmed = 0

        async def warm(self) -> None:
            NoModel.warmed += 1

        async def aclose(self) -> None:
            return None

    task = build_task(compose_task("humaneval"))
    chosen = task.load_instances()[:2]
    records = [InstanceRecord(task_hash=task.task_hash, task_spec="humaneval", instance_id=i.id,
                              output_text=i.row["canonical_solution"]) for i in chosen]
    exp = Experiment(model=ModelConfig(name="unloadable"), tracking=TrackingConfig(mlflow=False),
                     output_dir=str(tmp_path / "run"), progress=False)
    core = RunnerCore(NoModel(), exp.harness, ResultCache(None), progress=False)  # type: ignore[arg-type]
    scored = asyncio.run(score_by_execution(task, records, chosen, exp, core))
    assert [r.scores["pass"] for r in scored] == [1.0, 1.0]
    assert NoModel.warmed == 0
