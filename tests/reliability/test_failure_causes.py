"""Issue 24 item 7: a failed or partial run says why, under the results table.

A 500 storm (every request) and a partial outage (some questions) used to print only "N FAILED" or
an error count; the causes were only in instances.jsonl. Now each error kind is printed with its
count and one example message (engine/report.py `error_lines`), through `python -m engine` against
the fault server (tests/reliability/fault_server.py): no model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.report import error_lines
from engine.types import RunRecord
from tests.conftest import run_engine
from tests.reliability.fault_server import Fault, FaultServer

pytestmark = pytest.mark.slow  # engine subprocesses against the fault server (no model): seconds each

N = 3


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def _run(srv: FaultServer, workdir: Path, fault: Fault):
    rows = [{"id": f"q{i}", "question": f"What is {30 + i}+{7 * i + 1}?", "answer": str(31 + 8 * i)} for i in range(N)]
    data = workdir / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    srv.set_fault(fault)
    args = ["task=freshqa", "variant=zero", f"task.data.data_files={data}",
            "model=litellm", "model.name=openai/faulty", f"model.api_base={srv.base_url}",
            "harness.max_retries=1", "harness.retry_backoff_s=0.01", "harness.request_timeout_s=60",
            "tracking=none", "progress=false", "hydra.run.dir=runs/run"]
    return run_engine(args, workdir, timeout=300)


def _under_table(stdout: str) -> str:
    return stdout.split("Records:")[0]


def test_a_500_storm_prints_its_cause_under_the_table(server: FaultServer, workdir: Path) -> None:
    res = _run(server, workdir, Fault(kind="server_error"))
    assert res.returncode == 1, res.stderr[-2000:]
    text = _under_table(res.stdout)
    assert "FAILED" in text
    assert f"freshqa:zero: {N} of {N} errored, by kind:" in text, text
    [cause] = [line for line in text.splitlines() if line.startswith("  ") and "e.g." in line]
    assert cause.startswith(f"  {N} InternalServerError: e.g. "), cause
    assert "internal error" in cause, cause  # the server's own message, as instances.jsonl holds it


def test_a_partial_run_names_each_kind_with_its_count(server: FaultServer, workdir: Path) -> None:
    res = _run(server, workdir, Fault(kind="rate_limit", only=frozenset({"30+1"})))
    assert res.returncode == 3, res.stderr[-2000:]
    text = _under_table(res.stdout)
    assert f"freshqa:zero: 1 of {N} errored, by kind:" in text, text
    assert "  1 RateLimitError: e.g. " in text and "rate limited" in text, text

    record = RunRecord.model_validate_json((workdir / "runs" / "run" / "freshqa__zero" / "experiment.json").read_text())
    moved = record.model_copy(update={"run_dir": str(workdir / "moved")})  # our own logic: a folder gone since
    [line] = error_lines(moved)
    assert "1 errored; their causes are unreadable" in line and "instances.jsonl" in line, line
    clean = record.model_copy(update={"counts": record.counts.model_copy(update={"errored": 0})})
    assert error_lines(clean) == []
