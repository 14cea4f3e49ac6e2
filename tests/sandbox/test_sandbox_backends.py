"""The one async interface on every backend: exec (stdin, files), read_file, reset, stop; the
router's warm reuse and concurrency."""

from __future__ import annotations

import asyncio
import time

import pytest
from sandbox_testlib import SECRET

from engine.sandbox import SandboxLimits, SandboxPoolConfig, SandboxRouter
from engine.sandbox.pool import BACKENDS
from engine.sandbox.teardown import REGISTRY


def _pool(backend: str, **kw: object) -> SandboxPoolConfig:
    return SandboxPoolConfig(name=f"t-{backend}", backend=backend,  # type: ignore[arg-type]
                             limits=SandboxLimits(wall_time_s=5), **kw)  # type: ignore[arg-type]


def test_exec_stdin_files_read_reset(backend: str) -> None:
    async def go() -> None:
        sb = BACKENDS[backend](_pool(backend))
        await sb.start()
        try:
            r = await sb.exec(["python3", "-c",
                               "import sys,os; d=sys.stdin.read(); print(d.upper());"
                               "print(open('pkg/data.txt').read()); open('out.bin','wb')"
                               ".write(bytes(range(256))); print(sorted(os.environ))"],
                              stdin="hello", files={"pkg/data.txt": "payload",
                                                    "raw.bin": b"\x00\xff"})
            assert r.ok, r
            lines = r.stdout.splitlines()
            assert lines[0] == "HELLO" and lines[1] == "payload"
            env_keys = eval(lines[2])  # our own output
            assert "EVALBENCH_TEST_SECRET" not in env_keys and SECRET not in r.stdout
            assert set(env_keys) <= {"PATH", "HOME", "TMPDIR", "LANG", "PWD", "HOSTNAME",
                                     "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "LC_CTYPE"}
            assert await sb.read_file("out.bin") == bytes(range(256))
            assert await sb.read_file("raw.bin") == b"\x00\xff"
            r = await sb.exec("echo shell-$((6*7)); exit 3")
            assert r.exit_code == 3 and r.stdout == "shell-42\n" and not r.ok
            assert r.reason == "exit code 3"
            await sb.reset()
            with pytest.raises(FileNotFoundError):
                await sb.read_file("out.bin")
            r = await sb.exec(["sh", "-c", "ls -A | wc -l"])
            assert r.stdout.strip() == "0", r  # a fresh, empty work dir
            with pytest.raises(ValueError):
                await sb.exec(["true"], files={"../escape": "x"})
            with pytest.raises(ValueError):
                await sb.read_file("/etc/passwd")
        finally:
            await sb.stop()
        assert sb not in REGISTRY.snapshot()
    asyncio.run(go())


def test_timeout_and_output_cap(backend: str) -> None:
    async def go() -> None:
        sb = BACKENDS[backend](SandboxPoolConfig(
            name="cap", backend=backend,  # type: ignore[arg-type]
            limits=SandboxLimits(wall_time_s=1.5, output_bytes=1000)))
        await sb.start()
        try:
            t0 = time.monotonic()
            r = await sb.exec(["python3", "-c", "import time; print('started', flush=True);"
                               "time.sleep(60)"])
            assert r.timed_out and r.killed_reason == "timeout" and r.stdout == "started\n"
            assert time.monotonic() - t0 < 30  # cut long before the 60 s sleep, even on a busy machine
            r = await sb.exec(["python3", "-c", "print('y' * 5000)"])
            assert r.truncated and r.killed_reason == "output_limit" and len(r.stdout) == 1000
            r = await sb.exec(["python3", "-c", "print('z' * 100)"], timeout_s=3)
            assert r.ok and r.stdout == "z" * 100 + "\n"
        finally:
            await sb.stop()
    asyncio.run(go())


def test_router_reuses_warm_sandboxes_concurrently(backend: str) -> None:
    async def go() -> None:
        pool = _pool(backend, instances=2)
        async with SandboxRouter([pool], budget=2) as router:
            assert router.pools == {}  # lazy without demand
            results = await asyncio.gather(*(
                router.exec(["python"], ["sh", "-c", f"ls -A | wc -l; touch f{i}; sleep 0.3"])
                for i in range(6)))
            assert all(r.ok and r.stdout.strip() == "0" for r in results), results
            stats = router.stats()[pool.name]
            # The pool creates a sandbox only when none is idle: two started means two loans at
            # once (ran two at a time, no timing needed); six executions on them is warm reuse.
            assert stats["started"] == 2 and stats["executions"] == 6
    asyncio.run(go())
    assert not [s for s in REGISTRY.snapshot() if getattr(s, "config", None) is not None
                and s.config.name == f"t-{backend}"]


def test_planted_symlinks_never_lead_the_engine_outside(backend: str) -> None:
    """Code plants symlinks in its work dir; the engine (root) reading results or writing inputs
    must not follow them to host files."""
    import os

    from engine.sandbox.base import InputFilesError

    target = "/etc/evalbench_symlink_target"

    async def go() -> None:
        sb = BACKENDS[backend](_pool(backend))
        await sb.start()
        try:
            r = await sb.exec(["sh", "-c", f"ln -s /etc/shadow leak; ln -s {target} evil; "
                                           "ln -s /etc linkdir"])
            assert r.ok, r
            with pytest.raises(PermissionError):  # refused (docker: followed in-container only)
                await sb.read_file("leak")
            r = await sb.exec(["cat", "evil"], files={"evil": "replaced"})
            assert r.stdout == "replaced"  # the symlink was replaced, not followed
            with pytest.raises(InputFilesError):
                await sb.exec(["true"], files={"linkdir/evalbench_x": "pwned"})
            assert (await sb.exec(["echo", "ok"])).stdout == "ok\n"  # not broken by it
        finally:
            await sb.stop()
    asyncio.run(go())
    assert not os.path.exists(target) and not os.path.exists("/etc/evalbench_x")


def test_score_humaneval_samples_pass_at_k() -> None:
    """n samples per problem through the router: verdicts and the unbiased pass@k."""
    from engine.scoring.code_exec import load_humaneval, pass_at_k, score_humaneval_samples

    problems = load_humaneval()[:2]
    right = [p.canonical_solution for p in problems]
    completions = {problems[0].task_id: [right[0], "    return False\n", right[0]],
                   problems[1].task_id: ["    return []\n"] * 3}

    async def go() -> object:
        async with SandboxRouter([_pool("local", instances=2)]) as router:
            return await score_humaneval_samples(router, problems, completions, ks=(1, 2, 5))
    score = asyncio.run(go())
    assert [v.passed for v in score.verdicts[problems[0].task_id]] == [True, False, True]
    assert score.pass_at_k == {"pass@1": pytest.approx((2 / 3 + 0) / 2),
                               "pass@2": pytest.approx((pass_at_k(3, 2, 2) + 0) / 2)}
