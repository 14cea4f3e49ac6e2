"""Issue 24 item 9: a tool loop retries a model call that hit `harness.request_timeout_s`, as the
single-turn path does (docs/architecture.md, "One execution layer": the runner core retries every
model call the same way, whichever scaffold made it).

The fault server (tests/reliability/fault_server.py) hangs the first attempt of every question far
longer than the harness's request timeout and answers the second. Before the fix the single-turn
run scored every question while the tool loop errored each one with kind `timeout` after ONE
attempt: `call_model` retried `ProviderError`s only, and `asyncio.wait_for`'s timeout is not one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_engine
from tests.reliability.fault_server import Fault, FaultServer

pytestmark = pytest.mark.slow  # engine subprocesses against the fault server (no model): seconds each

N = 3
# The request timeout under `hang` (the server hangs 60 s). A first attempt that times out during the
# client's start-up never reaches the server: retries then cover it too (max_retries below).
REQUEST_TIMEOUT_S = 4.0


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def _run(srv: FaultServer, workdir: Path, name: str, *harness: str):
    rows = [{"id": f"q{i}", "question": f"What is {20 + i}+{5 * i + 3}?", "answer": str(23 + 6 * i)} for i in range(N)]
    data = workdir / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    srv.set_fault(Fault(kind="hang", times=1, hang_s=60.0))
    args = ["task=freshqa", "variant=zero", f"task.data.data_files={data}",
            "model=litellm", "model.name=openai/faulty", f"model.api_base={srv.base_url}", "model.timeout_s=120",
            "harness.max_retries=4", "harness.retry_backoff_s=0.05", f"harness.request_timeout_s={REQUEST_TIMEOUT_S}",
            "harness.concurrency=4", "tracking=none", "progress=false", f"hydra.run.dir=runs/{name}", *harness]
    res = run_engine(args, workdir, timeout=300)
    folder = workdir / "runs" / name / "freshqa__zero"
    instances = [json.loads(line) for line in (folder / "instances.jsonl").read_text().splitlines()]
    return res, instances


@pytest.mark.parametrize("harness", [
    ["harness.scaffold=tool_loop", "harness.max_turns=2"],
    ["harness.scaffold=multi_turn", "harness.max_turns=2"],
    [],  # single turn: the reference the scaffolds must match
], ids=["tool_loop", "multi_turn", "single_turn"])
def test_a_request_timeout_is_retried_in_every_scaffold(server: FaultServer, workdir: Path, harness: list[str]) -> None:
    res, instances = _run(server, workdir, "run", *harness)
    errors = [i["error"] for i in instances if i.get("error")]
    assert res.returncode == 0, f"errors: {errors}\n{res.stderr[-3000:]}"
    assert not errors
    assert sorted(i["scores"]["exact_match"] for i in instances) == [1.0] * N
    asked = Counter(h.key for h in server.log if h.key != "?")
    assert len(asked) == N and all(n >= 2 for n in asked.values()), asked  # the hung attempt, then the retry
    if harness:  # the model step records the attempts the call took
        steps = [s for i in instances for s in i["trajectory"] if s["type"] == "model"]
        assert steps and all(s["content"]["attempts"] >= 2 for s in steps), [s["content"]["attempts"] for s in steps]
