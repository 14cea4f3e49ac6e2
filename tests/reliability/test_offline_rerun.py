"""A fully cached re-run needs no model server (docs/architecture.md, "The response cache").

The reachability check of a network provider runs when a first request must be sent (its `warm`),
not at start: against a real OpenAI-compatible server (`transformers serve` on SmolLM2), a run fills
the cache; with the server stopped, the same command exits 0 with every answer from the cache, and a
run that needs one more answer is refused at once (exit 2) naming the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_engine
from tests.test_e2e import _free_port, _wait_http

pytestmark = pytest.mark.slow


def _instances(root: Path, name: str) -> list[dict]:
    (path,) = (root / "runs" / name).glob("*/instances.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_fully_cached_rerun_needs_no_server(workdir, smollm2_dir):
    port = _free_port()
    server = subprocess.Popen(
        ["transformers", "serve", "--host", "127.0.0.1", "--port", str(port), str(smollm2_dir)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    common = ["model=litellm", f"model.name=openai/{smollm2_dir}", f"model.api_base=http://127.0.0.1:{port}/v1",
              "task=gsm8k", "variant=0shot", "task.generation.max_tokens=16", "tracking=none"]
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", 180, server)
        served = run_engine([*common, "limit=2", "output_dir=runs/served"], workdir)
        assert served.returncode == 0, served.stderr[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    again = run_engine([*common, "limit=2", "output_dir=runs/again"], workdir, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    first, cached = _instances(workdir, "served"), _instances(workdir, "again")
    assert len(cached) == 2 and all(i["cached"] and i["error"] is None for i in cached)
    assert [i["output_text"] for i in cached] == [i["output_text"] for i in first]
    # One question more must be sent: the server's absence is then an exit 2 naming it, as before.
    more = run_engine([*common, "limit=3", "output_dir=runs/more"], workdir, timeout=300)
    assert more.returncode == 2, more.stderr[-3000:]
    assert f"model.api_base=http://127.0.0.1:{port}/v1" in more.stderr and "Traceback" not in more.stderr
