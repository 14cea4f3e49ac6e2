"""`python -m engine.compare`: table, json, csv, selectors, series, and bad input (exit 2, no traceback)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.compare.cli import main

from .conftest import SuitePair, make_suite_pair

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table(suite_pair: SuitePair, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(suite_pair.job_a), str(suite_pair.job_b))
    assert code == 0, err
    assert "A = smol-ft@step20    B = smol" in out
    lines = out.splitlines()
    assert any(line.startswith("mmlu:mc ") for line in lines)
    assert any(line.startswith("arc:mc (clustered)") for line in lines)
    assert any(line.startswith("SUITE core (mean of 2 tasks)") for line in lines)
    assert "2 only in A (e.g. extra1, extra2)" in out and "errored: 2 in A, 1 in B" in out


def test_json_and_csv_agree(suite_pair: SuitePair, capsys: pytest.CaptureFixture[str]) -> None:
    _, out_json, _ = run(capsys, str(suite_pair.job_a), str(suite_pair.job_b), "--format", "json")
    report = json.loads(out_json)
    _, out_csv, _ = run(capsys, str(suite_pair.job_a), str(suite_pair.job_b), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out_csv)))
    assert [r["level"] for r in rows] == ["task", "task", "suite"]
    by_task = {t["task_spec"]: t for t in report["tasks"]}
    for r in rows[:2]:
        assert float(r["delta"]) == pytest.approx(by_task[r["task_spec"]]["stats"]["delta"])
        assert r["verdict"] == by_task[r["task_spec"]]["verdict"]
    assert float(rows[2]["delta"]) == pytest.approx(report["suite"]["delta"])
    assert report["timings_s"]["compare"] < 2.0


def test_selectors_over_run_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make_suite_pair(tmp_path)
    code, out, err = run(capsys, "--runs-root", str(p.root), "model.checkpoint=step20", "model=smol", "--format", "json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["label_a"] == "smol-ft@step20" and rep["label_b"] == "smol"
    code, out, _ = run(capsys, "--runs-root", str(p.root), "tag.evalbench.checkpoint_step=20,task=arc:mc", "model.checkpoint=base", "--format", "json")
    assert code == 0 and [t["task_spec"] for t in json.loads(out)["tasks"]] == ["arc:mc"]
    code, out, _ = run(capsys, "--runs-root", str(p.root), "step=20,task=mmlu", "step=none", "--format", "json")  # a task name
    assert code == 0 and [t["task_spec"] for t in json.loads(out)["tasks"]] == ["mmlu:mc"]


def test_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make_suite_pair(tmp_path)
    code, out, err = run(capsys, "--series", str(p.root / "runs"), "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {(r["task_spec"], r["step"]) for r in rows} == {("arc:mc", "0"), ("arc:mc", "20"), ("mmlu:mc", "0"), ("mmlu:mc", "20")}
    step20 = next(r for r in rows if r["task_spec"] == "mmlu:mc" and r["step"] == "20")
    assert float(step20["paired_mde_vs_base"]) > 0 and step20["verdict_vs_base"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["{root}/missing", "{b}"], "Cannot find run"),
        (["--runs-root", "{root}", "modle=x", "{b}"], "Unknown selector key 'modle'"),
        (["--runs-root", "{root}", "model=nobody", "{b}"], "No run in the run folders"),
        (["{root}/runs", "{b}"], "names runs of 2 models"),
        (["{a}"], "exactly two runs"),
        (["--tracking-uri", "sqlite:///{root}/none.db", "model=x", "{b}"], "does not exist"),
        (["{other}", "{b}"], "no question in common"),
        (["{b}", "{b}"], "are the same run(s)"),
    ],
)
def test_bad_input_is_one_paragraph(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    p = make_suite_pair(tmp_path)
    from engine.compare.synthetic import write_run

    write_run(tmp_path / "other" / "gsm8k", task_spec="gsm8k", correct=[1.0, 0.0], model="x")
    args = [a.format(root=tmp_path, a=p.job_a, b=p.job_b, other=tmp_path / "other") for a in argv]
    code, out, err = run(capsys, *args)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert err.count("\n") == 1  # one paragraph


def test_subprocess_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.compare", str(tmp_path / "nope"), str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("engine.compare: ") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_serve_subprocess(tmp_path: Path) -> None:
    import urllib.request

    p = make_suite_pair(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "engine.compare", str(p.job_a), str(p.job_b), "--serve", "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # "viewer: http://127.0.0.1:PORT/  (Ctrl-C to stop)"
        assert line.startswith("viewer: http://127.0.0.1:"), line
        url = line.split()[1]
        with urllib.request.urlopen(url + "api/overview", timeout=10) as r:
            assert json.loads(r.read())["mode"] == "compare"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
