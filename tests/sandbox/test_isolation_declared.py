"""Issue 24 item 5: model-written code never runs unisolated without a word (docs/architecture.md,
"Sandboxes"; engine/sandbox/isolation.py).

The "model" is a tiny OpenAI-compatible server on loopback whose every completion is hostile code:
a function body that first connects to a TCP listener of this test on loopback. Through
`python -m engine`:

- `task=humaneval` with the default harness: the code runs on the strongest backend here (bwrap or
  docker), so the listener hears nothing; where none works it runs locally and the run prints ONE
  WARNING line. Before: a local pool, the connection arrived, nothing was said.
- `harness=code_agent` (its pool declared `network: false` on local): the agent's python_exec runs
  isolated the same way (before: the connection arrived).
- `+harness/sandboxes=local` (the user chose local): it runs, with exactly one WARNING line naming
  the network and the host's files.
- a pool on local that does not accept that (`isolation: required`, the default): exit 2 with one
  paragraph naming the pool, the unenforceable limits and the fix, before any model call.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox import isolation
from engine.sandbox.isolation import default_pool, isolation_warning, strongest_backend
from tests.conftest import run_engine

# The journeys run `python -m engine` with real sandboxes (no model is loaded): slow. The default
# pool's fallback, where no isolating backend works, is our own logic: fast, below.
slow = pytest.mark.slow

HOSTILE_BODY = '''    import socket
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"escaped")
    except OSError:
        pass
    for i, a in enumerate(numbers):
        for b in numbers[i + 1:]:
            if abs(a - b) < threshold:
                return True
    return False
'''

AGENT_CODE = 'import socket\ntry:\n    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"escaped")\n' \
             '    print("connected")\nexcept OSError as e:\n    print("blocked", e)\n'


class Listener:
    """A TCP listener on loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def heard(self, at_least: int = 0) -> int:
        """The connections accepted so far, once a pending one has had time to be accepted (up to
        10 s for `at_least`, else 0.5 s: the accept loop is blocked in accept(), so it is at once)."""
        deadline = time.monotonic() + (10.0 if at_least else 0.5)
        while time.monotonic() < deadline and not (at_least and self.connections >= at_least):
            time.sleep(0.05)
        return self.connections

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _handler(port: int, requests: list[dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # /v1/models
            self._send({"object": "list", "data": [{"id": "hostile", "object": "model"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(body)
            usage = {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
            if self.path.endswith("/completions") and "messages" not in body:
                text = HOSTILE_BODY.format(port=port)
                self._send({"id": "c", "object": "text_completion", "model": "hostile", "usage": usage,
                            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]})
                return
            # The code agent: first a python_exec call (text protocol), then the answer.
            told = len(body["messages"]) > 2  # system and question, then the call and its result
            text = ("def has_close_elements(numbers, threshold):\n" + HOSTILE_BODY.format(port=port)) if told else \
                '<tool_call>{"name": "python_exec", "arguments": {"code": ' + json.dumps(AGENT_CODE.format(port=port)) \
                + '}}</tool_call>'
            self._send({"id": "c", "object": "chat.completion", "model": "hostile", "usage": usage,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}]})
    return Handler


class HostileModel:
    def __init__(self, port: int) -> None:
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(port, self.requests))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture
def model(listener: Listener) -> Iterator[HostileModel]:
    srv = HostileModel(listener.port)
    yield srv
    srv.close()


def _run(model: HostileModel, workdir: Path, *extra: str):
    args = ["task=humaneval", "limit=1", "model=litellm", "model.name=openai/hostile", f"model.api_base={model.base_url}",
            "tracking=none", "progress=false", f"cache.path={workdir}/cache.sqlite", f"hydra.run.dir={workdir}/runs/r",
            *extra]
    res = run_engine(args, workdir, timeout=600)
    folder = workdir / "runs" / "r" / "humaneval"
    instances = [json.loads(line) for line in (folder / "instances.jsonl").read_text().splitlines()] \
        if (folder / "instances.jsonl").exists() else []
    return res, instances


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("WARNING: model-written code runs without isolation")]


@slow
def test_humaneval_by_default_runs_model_code_isolated_or_says_so(model: HostileModel, listener: Listener,
                                                                  workdir: Path) -> None:
    res, [inst] = _run(model, workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    backend, _ = strongest_backend()
    sandbox = inst["trajectory"][-1]["content"]
    assert sandbox["backend"] == backend and sandbox["status"] in ("passed", "failed"), sandbox  # the code ran
    if backend == "local":  # no isolating backend on this machine: said, once
        assert len(_warnings(res.stderr)) == 1, res.stderr[-3000:]
    else:
        assert listener.heard() == 0, f"model-written code reached the host's loopback from {backend}"
        assert not _warnings(res.stderr), res.stderr[-3000:]


@slow
def test_code_agent_runs_its_tools_isolated_or_says_so(model: HostileModel, listener: Listener, workdir: Path) -> None:
    res, [inst] = _run(model, workdir, "harness=code_agent", "harness.protocol=text", "harness.max_turns=2")
    assert res.returncode == 0, res.stderr[-3000:]
    tool_runs = [s["content"] for s in inst["trajectory"] if s["type"] == "sandbox" and s["content"].get("tool")]
    assert tool_runs, inst["trajectory"]
    backend, _ = strongest_backend()
    assert {t["backend"] for t in tool_runs} == {backend}
    if backend == "local":
        assert len(_warnings(res.stderr)) == 1, res.stderr[-3000:]
    else:
        assert listener.heard() == 0, f"the agent's python_exec reached the host's loopback from {backend}"
        assert "blocked" in tool_runs[0]["stdout"], tool_runs[0]


@slow
def test_local_chosen_explicitly_runs_with_one_warning(model: HostileModel, listener: Listener, workdir: Path) -> None:
    res, [inst] = _run(model, workdir, "+harness/sandboxes=local")
    assert res.returncode == 0, res.stderr[-3000:]
    assert inst["trajectory"][-1]["content"]["backend"] == "local"
    [warning] = _warnings(res.stderr)
    assert "sandbox pool 'py' (backend local)" in warning
    assert "network is not blocked" in warning and "host's world-readable files are not hidden" in warning
    assert listener.heard(at_least=1) >= 1  # what the warning said: local does not block the network


@slow
def test_a_local_pool_that_does_not_accept_it_is_refused_before_any_model_call(model: HostileModel,
                                                                              workdir: Path) -> None:
    res, instances = _run(model, workdir, "+harness.sandboxes=[{name: mine, backend: local}]")
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and not instances and not model.requests
    message = res.stderr.strip()
    assert message.count("\n") == 0, message  # one paragraph
    assert "Sandbox pool 'mine' (backend local) cannot enforce limits it declares" in message
    assert "network is not blocked" in message and "host's world-readable files" in message
    # Each fix is a command that works as written (the pool has no `limits`, so Hydra needs the `+`).
    assert "`+harness.sandboxes.0.limits.isolation=best_effort`" in message and "`+harness/sandboxes=" in message

    res, [inst] = _run(model, workdir, "+harness.sandboxes=[{name: mine, backend: local}]",
                       "+harness.sandboxes.0.limits.isolation=best_effort")  # the fix, as written
    assert res.returncode == 0, res.stderr[-3000:]
    assert inst["trajectory"][-1]["content"]["backend"] == "local" and len(_warnings(res.stderr)) == 1


def test_without_an_isolating_backend_the_default_pool_is_local_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    reasons = {"bwrap": "bubblewrap (bwrap) is not installed", "docker": "daemon not reachable"}
    monkeypatch.setattr(isolation, "_probe", lambda backend: reasons[backend])
    strongest_backend.cache_clear()
    try:
        pool = default_pool()
        assert pool.backend == "local" and pool.limits.isolation == "best_effort"
        warning = isolation_warning([pool], {pool.name})
        assert warning is not None and warning.count("\n") == 0
        assert "bwrap: bubblewrap (bwrap) is not installed" in warning and "docker: daemon not reachable" in warning
        assert "network is not blocked" in warning
    finally:
        strongest_backend.cache_clear()


def test_an_isolating_backend_declares_nothing_it_cannot_enforce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "_probe", lambda backend: None if backend == "docker" else "no user namespaces")
    strongest_backend.cache_clear()
    try:
        pool = default_pool()
        assert pool.backend == "docker" and pool.unenforced_limits == ()
        assert isolation_warning([pool], {pool.name}) is None
    finally:
        strongest_backend.cache_clear()
