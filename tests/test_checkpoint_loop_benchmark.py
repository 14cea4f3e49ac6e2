"""benchmarks/checkpoint_loop.py: its --help, the project files it writes (they compose), and the pure
helpers that read `engine.compare`'s JSON and check the cached re-run. The loop itself (fine-tune,
sweep, ~20 min) is the benchmark, not a test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from engine.compare.cli import main as compare_main
from engine.compare.synthetic import write_run
from engine.record.sweep import JobResult, JobRun

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "checkpoint_loop.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("checkpoint_loop", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cl = load_script()


def compare_json(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = compare_main([*argv, "--format", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_help_names_the_flags() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--limit", "--steps", "--save-every", "--keep", "--quick", "--workers"):
        assert flag in proc.stdout


def test_quick_sets_a_tiny_loop() -> None:
    args = cl.parse_args(["--quick"])
    assert (args.limit, args.steps, args.save_every) == (8, 4, 1)
    assert cl.parse_args([]).limit == 200 and cl.parse_args([]).keep is None
    assert cl.parse_args(["--keep"]).keep == "" and cl.parse_args(["--keep", "w"]).keep == "w"


def test_checkpoints_in_step_order(tmp_path: Path) -> None:
    for name in ("step10", "step2", "step100", "stepx", "logs"):
        (tmp_path / name).mkdir()
    (tmp_path / "step5").write_text("a file, not a checkpoint")
    assert [d.name for d in cl.checkpoint_dirs(tmp_path)] == ["step2", "step10", "step100"]
    assert cl.checkpoint_dirs(tmp_path / "absent") == []


def test_sweep_command_puts_the_base_first() -> None:
    cmd = cl.sweep_command("py", ["ckpt/step1", "ckpt/step2"], experiment="e", limit=8, workers=2, sweep_dir="sw")
    assert cmd[:5] == ["py", "-m", "engine", "-m", "hydra/launcher=joblib"]
    assert "model.path=null,ckpt/step1,ckpt/step2" in cmd and "suite=checkpoint_loop" in cmd
    assert {"tracking.experiment_name=e", "limit=8", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sw"} <= set(cmd)


@pytest.mark.slow  # no model, but it composes and renders three tasks: 20-70 s on the shared machine
def test_project_files_compose_into_the_suite(tmp_path: Path) -> None:
    """The written folder is a valid project: the suite's three tasks render, MMLU from the held-out file."""
    row = {"question": "Which planet is red?", "answer_a": "Mars", "answer_b": "Venus", "answer_c": "Earth",
           "answer_d": "Jupiter", "correct_answer": "A", "topic": "astronomy"}
    heldout = tmp_path / "ckpt" / "mmlu_heldout.jsonl"
    heldout.parent.mkdir()
    heldout.write_text("\n".join(json.dumps({**row, "question": f"{row['question']} ({i})"}) for i in range(3)) + "\n")
    for rel, text in cl.project_files(heldout).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "engine", "suite=checkpoint_loop", "inspect=true", "limit=2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Which planet is red?" in proc.stdout
    for spec in cl.SUITE_TASKS:
        assert spec in proc.stdout


def test_verdict_rows_read_the_compare_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 200
    better, base = [1.0] * 150 + [0.0] * 50, [1.0] * 50 + [0.0] * 150
    write_run(tmp_path / "a" / "t1", task_spec="t1:mc", correct=better, model="m", step=40)
    write_run(tmp_path / "a" / "t2", task_spec="t2:mc", correct=base, model="m", step=40)
    write_run(tmp_path / "b" / "t1", task_spec="t1:mc", correct=base, model="m")
    write_run(tmp_path / "b" / "t2", task_spec="t2:mc", correct=base, model="m")
    out = compare_json(capsys, str(tmp_path / "a"), str(tmp_path / "b"))
    rows = {r.task: r for r in cl.verdict_rows(out)}
    t1, t2 = rows["t1:mc"], rows["t2:mc"]
    assert (t1.n, t1.score_a, t1.score_b, t1.delta, t1.verdict) == (n, 0.75, 0.25, 0.5, "improved")
    assert (t2.delta, t2.verdict) == (0.0, "within noise")
    assert t1.ci_low < 0.5 < t1.ci_high and t1.p_value < 0.05
    report = json.loads(out)
    assert t1.p_value == next(t.get("p_adjusted", t["stats"]["p_value"]) for t in report["tasks"] if t["task_spec"] == "t1:mc")
    (suite,) = [r for r in rows.values() if r.task.startswith("suite")]
    assert suite.delta == pytest.approx(0.25) and "mean of 2" in suite.task
    text = cl.verdict_table(list(rows.values()), "step40")
    assert "step40" in text.splitlines()[0] and "+0.500" in text and "improved" in text


def test_series_rows_label_base_and_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = {None: [1.0] * 20 + [0.0] * 180, 10: [1.0] * 30 + [0.0] * 170, 20: [1.0] * 180 + [0.0] * 20}
    for i, (step, correct) in enumerate(scores.items()):
        write_run(tmp_path / f"s{step}", task_spec="t1:mc", correct=correct, model="m", step=step,
                  created=f"2025-01-0{i + 1}T00:00:00")
    out = compare_json(capsys, "--series", *(str(tmp_path / f"s{s}") for s in scores))
    (row,) = cl.series_rows(out)
    assert row.task == "t1:mc" and row.labels == ["base", "step10", "step20"]
    assert row.values == pytest.approx([0.1, 0.15, 0.9])
    assert row.verdicts[0] is None and row.verdicts[2] == "improved"
    text = cl.series_table([row])
    assert text.splitlines()[0].split() == ["task", "base", "step10", "step20"]
    assert "0.900 +" in text and "0.100 " in text


def job(model: str, run_dir: Path, score: float) -> JobResult:
    return JobResult(job=0, job_dir=str(run_dir.parent), model=model, task_spec="s", status="finished", exit_code=0,
                     runs=[JobRun(task_spec="t1:mc", status="finished", metric="acc", score=score, run_dir=str(run_dir))])


def test_cached_check_catches_model_calls_and_changed_scores(tmp_path: Path) -> None:
    first = tmp_path / "first"
    write_run(first, task_spec="t1:mc", correct=[1.0, 0.0])
    again = tmp_path / "again"
    again.mkdir()
    lines = [json.loads(x) for x in (first / "instances.jsonl").read_text().splitlines()]
    (again / "instances.jsonl").write_text("\n".join(json.dumps({**x, "cached": True}) for x in lines) + "\n")
    assert cl.cached_check([job("m", first, 0.5)], [job("m", again, 0.5)]) is None
    assert "scores differ" in (cl.cached_check([job("m", first, 0.5)], [job("m", again, 0.25)]) or "")
    assert "2 instance(s) were not answered" in (cl.cached_check([job("m", first, 0.5)], [job("m", first, 0.5)]) or "")


def test_verdict_note_says_when_p_alone_would_call_it() -> None:
    row = cl.VerdictRow(task="t", n=8, score_b=0.4, score_a=0.0, delta=-0.4, ci_low=-0.7, ci_high=-0.1,
                        p_value=0.04, mde=0.5, verdict="within noise")
    assert cl.verdict_note(row) == "within noise (p < 0.05, |Δ| < MDE)"
    assert cl.verdict_note(row.model_copy(update={"p_value": 0.3})) == "within noise"
    assert cl.verdict_note(row.model_copy(update={"verdict": "regressed"})) == "regressed"


def test_resume_reuses_only_a_finished_phase_with_the_same_settings(tmp_path: Path) -> None:
    args = cl.parse_args(["--keep", str(tmp_path), "--resume"])
    name = cl.finetune_name(args)
    assert cl.reusable(args, tmp_path, "fine-tune", name) is None  # nothing measured yet
    cl.save_phase(tmp_path, "fine-tune", cl.Phase(name=name, wall_s=12.5, ok=True, note="step10"))
    cl.save_phase(tmp_path, "sweep", cl.Phase(name="sweep (limit 8)", wall_s=3.0, ok=False, note="exit 1"))
    reused = cl.reusable(args, tmp_path, "fine-tune", name)
    assert reused is not None and reused.reused and reused.wall_s == 12.5
    assert cl.reusable(args, tmp_path, "sweep", "sweep (limit 8)") is None  # it failed: run it again
    assert cl.reusable(args, tmp_path, "fine-tune", "fine-tune (other settings)") is None
    assert cl.reusable(cl.parse_args(["--keep", str(tmp_path)]), tmp_path, "fine-tune", name) is None  # no --resume


def test_resume_needs_a_kept_folder(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cl.parse_args(["--resume"])
    assert exc.value.code == 2 and "--resume needs --keep DIR" in capsys.readouterr().err
