"""The tracking store has a deadline (docs/architecture.md, "The tracking store's deadline").

An MLflow store that does not answer must not stall a run: through `python -m engine`, a tracking
server with no listener and one that accepts connections and never replies each end with the run
folder written, exit 4 and the `engine.sync` hint, within STORE_BUDGET_S + REQUEST_TIMEOUT_S (plus
slack for start-up on a loaded machine). The re-runs are served from a cache the module fills once,
so they load no model: the time measured is the store's.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.record import store
from tests.conftest import run_engine

BOUND_S = store.STORE_BUDGET_S + store.REQUEST_TIMEOUT_S  # what an unreachable store may cost a run
SLACK_S = 40.0  # interpreter and engine start-up, the cached run itself, a loaded machine
RUN = ["limit=2"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose response cache holds every answer of RUN (one real SmolLM2 run, no tracking)."""
    folder = tmp_path_factory.mktemp("deadline")
    res = run_engine([*RUN, "tracking=none", "output_dir=runs/fill"], folder)
    assert res.returncode == 0, res.stderr[-3000:]
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts every connection and never sends a byte (a hung tracking server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)  # kept open, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def _run_against(cached: Path, uri: str, name: str) -> tuple[float, object]:
    t0 = time.monotonic()
    res = run_engine([*RUN, "tracking=server", f"tracking.tracking_uri={uri}", f"output_dir=runs/{name}"], cached,
                     timeout=BOUND_S + SLACK_S + 60)
    return time.monotonic() - t0, res


def _assert_bounded_exit_4(cached: Path, elapsed: float, res, name: str) -> None:
    assert res.returncode == 4, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "python -m engine.sync" in res.stderr and "did not reach the tracking store" in res.stderr
    assert "warning: the tracking store" in res.stderr  # said when it happened, not only at the end
    (record_file,) = (cached / "runs" / name).glob("*/experiment.json")
    record = json.loads(record_file.read_text())
    assert record["counts"]["scored"] == 2 and record["mlflow_run_id"] is None  # the folder has it all
    assert elapsed < BOUND_S + SLACK_S, f"{elapsed:.1f} s against a store that does not answer"


@pytest.mark.slow
def test_a_tracking_server_with_no_listener_costs_a_bounded_time_then_exit_4(cached):
    port = _free_port()
    elapsed, res = _run_against(cached, f"http://127.0.0.1:{port}", "refused")
    _assert_bounded_exit_4(cached, elapsed, res, "refused")


@pytest.mark.slow
def test_a_tracking_server_that_never_answers_costs_a_bounded_time_then_exit_4(cached, silent_server):
    elapsed, res = _run_against(cached, f"http://127.0.0.1:{silent_server}", "silent")
    _assert_bounded_exit_4(cached, elapsed, res, "silent")
    assert elapsed > store.REQUEST_TIMEOUT_S  # it did wait for an answer: the bound is the timeout's, not luck


# -- the budget itself (our logic, no store) ---------------------------------------------------------
def test_the_budget_declares_the_store_down_and_later_calls_fail_at_once(monkeypatch):
    monkeypatch.setattr(store, "STORE_BUDGET_S", 0.3)
    monkeypatch.setattr(store, "outage", store._Outage())
    calls = []

    def refused() -> None:
        calls.append(time.monotonic())
        raise ConnectionError("connection refused")

    t0 = time.monotonic()
    with pytest.raises((store.StoreUnreachable, ConnectionError)):
        store.retry(refused, "first call")
    with pytest.raises(store.StoreUnreachable):  # the budget is spent within this call or the next
        store.retry(refused, "second call")
    made = len(calls)
    with pytest.raises(store.StoreUnreachable):
        store.retry(refused, "third call")
    with pytest.raises(store.StoreUnreachable):
        store.client("http://127.0.0.1:9")
    assert len(calls) == made  # down: no attempt at all
    assert time.monotonic() - t0 < 0.3 + 2 * store.MAX_BACKOFF_S


def test_an_answer_ends_the_outage(monkeypatch):
    monkeypatch.setattr(store, "outage", store._Outage())
    answers = iter([ConnectionError("connection refused"), "ok"])

    def flaky() -> str:
        got = next(answers)
        if isinstance(got, Exception):
            raise got
        return got

    assert store.retry(flaky, "flaky") == "ok"
    assert store.outage.since is None and store.outage.down_at is None


def test_mlflow_http_retries_are_off_and_requests_time_out(monkeypatch):
    for name in store.MLFLOW_HTTP_ENV:
        monkeypatch.delenv(name, raising=False)
    store.client("http://127.0.0.1:9")  # no request is sent to build a client
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 0
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == store.REQUEST_TIMEOUT_S
