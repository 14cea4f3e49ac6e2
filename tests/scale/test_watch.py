"""`python -m engine.watch`: each step<N> checkpoint is evaluated once, when complete (engine/watch.py)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.watch import snapshot, step_dirs

EXPERIMENT = ["task=truthfulqa_mc1", "limit=2"]


def _watch_cmd(workdir: Path, ckpts: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine.watch", str(ckpts), *EXPERIMENT, f"cache.path={workdir / 'cache.sqlite'}",
            "--runs-dir", str(workdir / "runs"), *extra]


def _run_folders(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "runs").rglob("experiment.json"))]


def _copy_checkpoint(src: Path, dst: Path) -> None:
    """As a trainer writes one: tokenizer and config first, the weights last."""
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir(), key=lambda p: p.suffix == ".safetensors"):
        shutil.copy2(f, dst / f.name)


def test_a_checkpoint_counts_once_complete(tmp_path: Path, smollm2_dir: Path) -> None:
    (tmp_path / "step20").mkdir()
    (tmp_path / "step3").mkdir()
    (tmp_path / "notes").mkdir()
    assert [s for s, _ in step_dirs(tmp_path)] == [3, 20]
    ckpt = tmp_path / "step20"
    assert snapshot(ckpt) is None
    (ckpt / "config.json").write_text("{}")
    assert snapshot(ckpt) is None  # no weights yet
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors",
                                                                                  "b": "model-2.safetensors"}}))
    (ckpt / "model-1.safetensors").write_bytes(b"x")
    assert snapshot(ckpt) is None  # a shard the index lists is missing
    (ckpt / "model-2.safetensors").write_bytes(b"y")
    first = snapshot(ckpt)
    assert first is not None and snapshot(ckpt) == first
    (ckpt / "model-2.safetensors").write_bytes(b"yy")  # still being written
    assert snapshot(ckpt) != first


def test_bad_input_exits_2(tmp_path: Path) -> None:
    for args in ([str(tmp_path / "nope"), "task=truthfulqa_mc1"], [str(tmp_path), "task=nope"],
                 [str(tmp_path), "model.path=/x"]):
        res = subprocess.run([sys.executable, "-m", "engine.watch", *args], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def _wait_for(lines: queue.Queue, needle: str, seen: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} in {timeout}s; watch said:\n{''.join(seen)}")


@pytest.mark.slow
def test_watch_evaluates_a_new_checkpoint_once(workdir: Path, smollm2_dir: Path) -> None:
    ckpts = workdir / "ckpts"
    ckpts.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_watch_cmd(workdir, ckpts, "--interval", "1"), cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _wait_for(lines, "watch: watching", seen, 120)
        _copy_checkpoint(smollm2_dir, ckpts / "step100")
        _wait_for(lines, "watch: step100 evaluated, exit code 0", seen, 600)
        # A few more looks at the same folder start nothing new (the evaluated one is never taken again).
        (ckpts / "step100" / "README.md").write_text("touched after the evaluation\n")
        time.sleep(4)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    while not lines.empty():
        seen.append(lines.get())
    said = "".join(seen)
    assert said.count("watch: evaluating step100") == 1, said
    assert proc.returncode == 130
    [record] = _run_folders(workdir)
    assert record["status"] == "finished" and record["task_spec"] == "truthfulqa_mc1"
    assert record["model"]["checkpoint_step"] == 100 and record["counts"]["scored"] == 2

    # A second watch, --once: the finished run is found, nothing is evaluated again.
    again = subprocess.run(_watch_cmd(workdir, ckpts, "--once", "--interval", "0.5"), cwd=workdir, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "watch: step100 already evaluated" in again.stdout and "evaluating" not in again.stdout
    assert len(_run_folders(workdir)) == 1

    # The MLflow store alone is enough: with the run folders gone, the tagged run is found there.
    shutil.rmtree(workdir / "runs")
    again = subprocess.run(_watch_cmd(workdir, ckpts, "--once", "--interval", "0.5"), cwd=workdir, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already evaluated" in again.stdout and "MLflow run(s)" in again.stdout, again.stdout


@pytest.mark.slow
def test_watch_once_evaluates_what_is_there(workdir: Path, smollm2_dir: Path) -> None:
    """--once over two checkpoints, one of them broken: the good one scores, the broken one fails alone, exit 1;
    a second --once evaluates only what did not finish."""
    ckpts = workdir / "ckpts"
    _copy_checkpoint(smollm2_dir, ckpts / "step5")
    (ckpts / "step9").mkdir()
    (ckpts / "step9" / "config.json").write_text("{}")
    (ckpts / "step9" / "model.safetensors").write_bytes(b"not a checkpoint")
    res = subprocess.run(_watch_cmd(workdir, ckpts, "--once", "--interval", "0.5"), cwd=workdir, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 1, res.stderr[-3000:]
    assert res.stdout.index("evaluating step5") < res.stdout.index("evaluating step9")
    assert [r["model"]["checkpoint_step"] for r in _run_folders(workdir)] == [5]
    again = subprocess.run(_watch_cmd(workdir, ckpts, "--once", "--interval", "0.5"), cwd=workdir, capture_output=True,
                           text=True, timeout=600)
    assert "step5 already evaluated" in again.stdout and "evaluating step9" in again.stdout
    assert "evaluating step5" not in again.stdout
