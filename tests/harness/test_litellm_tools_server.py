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
    steps = row["trajectory"]
    model_steps = [s for s in steps if s["type"] == "model"]
    # Every model turn went over the wire with the native protocol, and the server's answer came back.
    assert model_steps and all(s["content"]["protocol"] == "native" for s in model_steps)
    assert all(s["content"]["prompt_tokens"] > 0 and s["content"]["completion_tokens"] > 0 for s in model_steps)
    assert all(s["content"]["text"].strip() or s["content"]["native_tool_calls"] for s in model_steps)
    # The trajectory ends cleanly, and the answer recorded is the one the trajectory ended with.
    (end,) = [s["content"]["end_reason"] for s in steps if "end_reason" in s["content"]]
    assert "end_reason" in steps[-1]["content"] and end in {"answer", "submit", "max_turns", "max_tokens", "max_time"}
    final = steps[-1]["content"]
    expected = {"answer": final.get("text"), "submit": final.get("content")}.get(end, final.get("answer"))
    assert row["output_text"] == expected and row["output_text"].strip()
