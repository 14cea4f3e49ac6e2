"""The API path (evalbench issue 13): the lean OpenAI-compatible client and group-committed cache writes.

- The lean path (engine/models/openai_compat.py) and the litellm path give identical instance
  records and identical cache rows against the benchmark server (benchmarks/api_server.py), for
  chat and for text completions.
- Cache writes are group commits, not one per answer: every answer the server gave reaches the
  cache while the run is still going, a SIGKILL keeps them, and the re-run asks only the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config.compose import compose_experiment
from engine.config.suites import expand_experiment
from engine.models.litellm_provider import LiteLLMProvider
from engine.runner.cache import SCHEMA, ResultCache
from engine.runner.core import RunnerCore
from engine.runner.task_run import execute
from tests.conftest import run_engine
from tests.reliability.fault_server import Fault, FaultServer

pytestmark = pytest.mark.slow  # servers and engine subprocesses

ROOT = Path(__file__).resolve().parents[1]
N = 20


def _rows(n: int) -> list[dict[str, str]]:
    return [{"id": f"q{i:02d}", "question": f"What is {10 + i}+{3 * i + 7}?", "answer": str(17 + 4 * i)}
            for i in range(n)]


@pytest.fixture(scope="module")
def bench_server() -> Iterator[str]:
    """benchmarks/api_server.py, no latency: its base URL."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "api_server.py"), "--latency", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def _records(base: str, data: Path, cache_path: Path, lean: bool, chat: bool):
    exp = compose_experiment(["task=freshqa", "variant=zero", f"task.data.data_files={data}", "model=litellm",
                              "model.name=openai/bench", f"model.api_base={base}", f"task.chat={str(chat).lower()}",
                              "harness.concurrency=8", "tracking=none", "progress=false", "output_dir=unused"])
    [task_run] = expand_experiment(exp)
    provider = LiteLLMProvider(exp.model, lean=lean)
    assert (provider.lean is not None) == lean
    cache = ResultCache(cache_path)

    async def go():
        try:
            return await execute(task_run, exp, RunnerCore(provider, exp.harness, cache, progress=False))
        finally:
            await provider.aclose()
    result = asyncio.run(go())
    cache.close()
    rows = dict(sqlite3.connect(cache_path).execute(f"SELECT key, value FROM {SCHEMA}").fetchall())
    return [r.model_dump(mode="json", exclude={"latency_s"}) for r in result.instances], rows


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_the_lean_path_and_litellm_give_identical_records(bench_server, tmp_path, chat):
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(N)))
    lean, lean_rows = _records(bench_server, data, tmp_path / "lean.sqlite", lean=True, chat=chat)
    slow, slow_rows = _records(bench_server, data, tmp_path / "litellm.sqlite", lean=False, chat=chat)
    assert len(lean) == N and all(r["error"] is None and r["scores"]["exact_match"] == 1.0 for r in lean)
    assert lean == slow  # responses, scores, tokens, hashes: everything but the latency
    assert lean_rows == slow_rows and len(lean_rows) == N  # the cache rows too (same keys, same values)


def _cache_rows(db: Path) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute(f"SELECT COUNT(*) FROM {SCHEMA}").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_every_answer_reaches_the_cache_during_the_run_and_survives_a_kill(tmp_path):
    rows = _rows(40)
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answered = frozenset(f"{10 + i}+{3 * i + 7}" for i in range(0, 40, 3))  # 14 questions answered
    hung = frozenset(f"{10 + i}+{3 * i + 7}" for i in range(40)) - answered
    db = tmp_path / "cache.sqlite"
    with FaultServer() as srv:
        args = ["task=freshqa", "variant=zero", f"task.data.data_files={data}", "model=litellm",
                "model.name=openai/faulty", f"model.api_base={srv.base_url}", "harness.concurrency=40",
                "harness.max_retries=0", "tracking=none", "progress=false", f"cache.path={db}"]
        srv.set_fault(Fault(kind="hang", only=hung, hang_s=120))  # the rest never answer
        proc = subprocess.Popen([sys.executable, "-m", "engine", *args, "hydra.run.dir=runs/killed"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            # Every answer is in the cache while the run still waits for the others: no batch held back.
            while _cache_rows(db) < len(answered) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            assert proc.poll() is None
            assert {h.key for h in srv.log if h.outcome == "ok"} == answered
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert _cache_rows(db) == len(answered)
        srv.set_fault(Fault())
        res = run_engine([*args, "hydra.run.dir=runs/resumed"], tmp_path, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        asked_again = Counter(h.key for h in srv.log)
    instances = [json.loads(line) for line in (tmp_path / "runs/resumed/freshqa__zero/instances.jsonl").read_text().splitlines()]
    assert len(instances) == 40 and all(r["output_text"] == r["gold"] for r in instances)
    assert sum(r["cached"] for r in instances) == len(answered)
    assert set(asked_again) == hung and set(asked_again.values()) == {1}  # nothing answered was asked again
