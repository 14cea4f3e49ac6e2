"""Pooled docker hosts (engine/sandbox/pool.py MultiHostPool): executions spread over several
daemons, per-host caps, a failing host taken out with a message, teardown on every host.

The fast tests use a fake sandbox; the slow one runs a HumanEval slice (canonical and hostile
completions) over the local daemon and a second dockerd (scripts/ci/second_docker.sh) reached
over tcp, and checks the verdicts equal a single-host run.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

import engine.tasks  # noqa: F401 - engine.scoring's package init needs engine.tasks imported first
from engine.sandbox import Demand, ExecResult, SandboxError, SandboxPoolConfig, SandboxRouter
from engine.sandbox import pool as pool_mod
from engine.sandbox.base import Sandbox
from engine.sandbox.models import DockerHost

ROOT = Path(__file__).resolve().parents[2]
GOOD, BAD = "tcp://good:2376", "tcp://bad:2376"


def test_docker_hosts_config() -> None:
    cfg = SandboxPoolConfig(name="py", backend="docker",
                            docker_hosts=["unix:///var/run/docker.sock", {"url": GOOD, "concurrency": 1}])
    assert [h.url for h in cfg.docker_hosts] == ["unix:///var/run/docker.sock", GOOD]
    assert cfg.docker_hosts[1].concurrency == 1
    for bad in ({"backend": "local", "docker_hosts": [GOOD]}, {"backend": "docker", "docker_hosts": [GOOD, GOOD]},
                {"backend": "docker", "docker_hosts": ["127.0.0.1:2376"]}):
        with pytest.raises(ValidationError):
            SandboxPoolConfig(name="py", **bad)  # type: ignore[arg-type]


class FakeDocker(Sandbox):
    """Stands in for DockerSandbox: runs nothing; a sandbox on BAD breaks on its first exec."""

    backend: ClassVar[str] = "docker"
    live: ClassVar[set[str]] = set()

    def __init__(self, config: SandboxPoolConfig, index: int = 0, host: DockerHost | None = None) -> None:
        super().__init__(config, index)
        self.host = host

    async def start(self) -> None:
        self.started = True
        FakeDocker.live.add(f"{self.name}@{self.host.url if self.host else ''}")

    async def exec(self, command, stdin=None, files=None, timeout_s=None) -> ExecResult:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)
        if self.host is not None and self.host.url == BAD:
            raise SandboxError("connection reset by peer")
        res = self._result(exit_code=0, stdout=b"ok", stderr=b"", timed_out=False, truncated=False, duration_s=0.01)
        return res.model_copy(update={"host": self.host.url if self.host else ""})

    async def read_file(self, path: str) -> bytes:
        return b""

    async def reset(self) -> None:
        pass

    async def stop(self) -> None:
        self.kill_sync()

    def kill_sync(self) -> None:
        self.stopped = True
        FakeDocker.live.discard(f"{self.name}@{self.host.url if self.host else ''}")


@pytest.fixture
def fake_hosts(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Health per host URL (None: healthy); the pool's check reads it."""
    health: dict[str, str | None] = {GOOD: None, BAD: None}
    monkeypatch.setattr(pool_mod, "DockerSandbox", FakeDocker)
    monkeypatch.setattr(pool_mod, "check_host", lambda host, image, peers=(): health[host.url])
    FakeDocker.live.clear()
    return health


def _run_all(cfg: SandboxPoolConfig, n: int) -> tuple[list[ExecResult], dict[str, dict[str, int]]]:
    async def go() -> tuple[list[ExecResult], dict[str, dict[str, int]]]:
        async with SandboxRouter([cfg], demands=[Demand(requires=["python"], instances=n)]) as router:
            results = await asyncio.gather(*(router.exec(["python"], ["true"]) for _ in range(n)))
            return list(results), router.stats()
    return asyncio.run(go())


def test_spread_with_per_host_caps(fake_hosts: dict[str, str | None]) -> None:
    cfg = SandboxPoolConfig(name="py", backend="docker", instances=3,
                            docker_hosts=[{"url": GOOD, "concurrency": 1}, "tcp://other:2376"])
    fake_hosts["tcp://other:2376"] = None
    results, stats = _run_all(cfg, 9)
    assert all(r.ok for r in results)
    assert stats["py"]["started"] == 3  # 1 on GOOD (its cap), 2 on the other
    assert stats["py"][f"executions@{GOOD}"] > 0 and stats["py"]["executions@tcp://other:2376"] > 0
    assert not FakeDocker.live  # torn down on both hosts


def test_failing_host_is_taken_out_with_a_message(fake_hosts: dict[str, str | None], monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = SandboxPoolConfig(name="py", backend="docker", instances=4, docker_hosts=[BAD, GOOD])
    fake_hosts[BAD] = None  # healthy at start; its executions then fail and the re-check fails
    orig = pool_mod.MultiHostPool._recheck

    async def recheck(self, h, error):  # type: ignore[no-untyped-def]
        fake_hosts[BAD] = "daemon not reachable: connection refused"
        await orig(self, h, error)

    monkeypatch.setattr(pool_mod.MultiHostPool, "_recheck", recheck)
    results, stats = _run_all(cfg, 8)
    assert all(r.ok and r.host == GOOD for r in results)  # retried on GOOD: never a silent 0
    err = capsys.readouterr().err
    assert f"docker host {BAD} of sandbox pool 'py' is taken out: daemon not reachable" in err
    assert f"its executions go to {GOOD}" in err
    assert not FakeDocker.live


def test_unhealthy_host_at_start_and_none_left(fake_hosts: dict[str, str | None]) -> None:
    fake_hosts[BAD] = "daemon not reachable: refused"
    results, stats = _run_all(SandboxPoolConfig(name="py", backend="docker", docker_hosts=[BAD, GOOD]), 4)
    assert Counter(r.host for r in results) == {GOOD: 4} and stats["py"][f"executions@{BAD}"] == 0
    with pytest.raises(SandboxError, match="no docker host is usable"):
        _run_all(SandboxPoolConfig(name="py", backend="docker", docker_hosts=[BAD]), 1)


# -- a real second Docker daemon -------------------------------------------------------------------

@pytest.fixture(scope="module")
def second_docker() -> str:
    from engine.sandbox.docker_backend import docker_unavailable_reason

    if docker_unavailable_reason() is not None:
        pytest.skip("docker is not running (bash scripts/setup_system.sh)")
    proc = subprocess.run(["bash", str(ROOT / "scripts/ci/second_docker.sh")], capture_output=True, text=True,
                          timeout=180)
    if proc.returncode != 0:
        pytest.skip(f"cannot start a second dockerd: {proc.stderr[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


# A HumanEval slice: canonical solutions and hostile or broken completions.
BROKEN = {0: "    return False\n", 1: "    raise ValueError('boom')\n", 2: "    return (\n",
          3: "    import time\n    time.sleep(100)\n", 4: "    import os\n    os.fork()\n",
          5: "    x = bytearray(10 ** 13)\n", 6: "    import os\n    os._exit(0)\n",
          7: "    import sys\n    sys.exit(0)\n"}


@pytest.mark.slow
def test_humaneval_slice_over_two_docker_hosts(second_docker: str) -> None:
    from engine.sandbox.docker_backend import LABEL, client
    from engine.scoring.code_exec import load_humaneval, run_humaneval_check

    problems = load_humaneval()[:16]
    items = [(p, BROKEN.get(i, p.canonical_solution)) for i, p in enumerate(problems)]
    local = "unix:///var/run/docker.sock"

    async def verdicts(hosts: list[str]) -> list[tuple[str, bool, str, str]]:
        pool = SandboxPoolConfig(name="he", backend="docker", instances=4, docker_hosts=hosts)
        async with SandboxRouter([pool], demands=[Demand(requires=["python"], instances=len(items))]) as router:
            out = await asyncio.gather(*(run_humaneval_check(router, p, c, 3.0) for p, c in items))
        hosts_used.append(Counter(v.execution.host for v in out if v.execution))
        return [(v.task_id, v.passed, v.status, v.result) for v in out]

    hosts_used: list[Counter[str]] = []
    single = asyncio.run(verdicts([local]))
    spread = asyncio.run(verdicts([local, second_docker]))
    assert spread == single
    assert sum(passed for _, passed, _, _ in single) == 16 - len(BROKEN)
    assert hosts_used[1][local] > 0 and hosts_used[1][second_docker] > 0, hosts_used
    for url in (local, second_docker):  # teardown reached every host
        assert not client(DockerHost(url=url)).containers.list(all=True, filters={"label": [LABEL]})
