"""The tool loop's native path through litellm against a real OpenAI-compatible server.

`transformers serve` accepts `tools` but does not parse SmolLM2's tool calls (shared/DATA.md), so
this proves the request/response path over the wire, and that a model that answers in text ends
the trajectory cleanly with that answer recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_engine
from tests.test_e2e import _free_port, _stop, _wait_http

pytestmark = pytest.mark.slow


def test_search_agent_native_protocol_through_litellm(workdir, smollm2_dir):
    port = _free_port()
    server = subprocess.Popen(
        ["transformers", "serve", "--host", "127.0.0.1", "--port", str(port), str(smollm2_dir)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", 180, server)
        res = run_engine(
            ["task=freshqa", "variant=zero", "harness=search_agent", "harness.protocol=native", "limit=1",
             "model=litellm", f"model.name=openai/{smollm2_dir}", f"model.api_base=http://127.0.0.1:{port}/v1",
             "task.generation.max_tokens=32", "tracking=none"],
            workdir,
        )
    finally:
        _stop(server)
    assert res.returncode == 0, res.stderr[-3000:]
    (inst_file,) = list(workdir.glob("runs/*/freshqa__zero/instances.jsonl"))
    (row,) = [json.loads(line) for line in inst_file.read_text().splitlines()]
    assert row["error"] is None
    model_steps = [s for s in row["trajectory"] if s["type"] == "model"]
    assert model_steps and model_steps[0]["content"]["text"] is not None
    assert row["output_text"] is not None
