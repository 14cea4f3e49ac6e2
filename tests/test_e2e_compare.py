"""The main promise, end to end: evaluate two checkpoints with `python -m engine`, compare them
question by question with `python -m engine.compare`, and get exactly the paired statistics that
an independent numpy/scipy computation over the two `instances.jsonl` files gives.

The checkpoints are the embedded SmolLM2-135M-Instruct and a copy with one MLP layer perturbed
(fixed seed), so some answers change and others do not. HellaSwag (cloze, per-character
normalization) has no cluster field and is a plain mean, so the reference figures are the plain
paired formulas of README "Statistics" / "Comparing checkpoints"; the test checks that premise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from statsmodels.stats.contingency_tables import mcnemar

from tests.conftest import run_engine
from tests.test_stats_small_sample import _tango_by_numerical_likelihood

pytestmark = pytest.mark.slow

TASK = ["task=hellaswag", "variant=rc", "limit=40", "progress=false"]
LAYER = 10  # model.layers.<LAYER>.mlp.down_proj.weight gets the perturbation
NOISE = 1.0  # Gaussian noise of this many weight standard deviations, seed 0
STAT_FIELDS = ("n", "mean_a", "mean_b", "delta", "stderr", "ci_low", "ci_high", "z", "p_value", "mde",
               "wins", "losses", "ties", "mcnemar_p")


def _perturbed_copy(src: Path, dst: Path) -> None:
    # torch and safetensors are heavy: imported where the test needs them
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    name = f"model.layers.{LAYER}.mlp.down_proj.weight"
    w = tensors[name]
    noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    tensors[name] = (w.float() + NOISE * w.float().std() * noise).to(w.dtype)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})


def _compare(args: list[str], cwd: Path) -> dict:
    env = {**os.environ, "EVALBENCH_CACHE": str(cwd / "compare-cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run([sys.executable, "-m", "engine.compare", *args, "--format", "json"], cwd=cwd,
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def _instances(run_dir: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (run_dir / "instances.jsonl").read_text().splitlines()]
    assert all(r["sample_index"] == 0 for r in rows)  # one sample per question
    return {r["instance_id"]: r for r in rows}


def _recomputed_acc(row: dict) -> float:
    """acc of a cloze question under per-character normalization, from the recorded logprobs."""
    conts = row["request"]["continuations"]
    normed = [lp / max(len(c.removeprefix(" ")), 1) for lp, c in zip(row["logprobs"], conts, strict=True)]
    return float(int(np.argmax(normed)) == row["gold"])


def _reference(a: dict[str, dict], b: dict[str, dict]) -> dict[str, float]:
    """Paired statistics of A − B, written out from the formulas (README, "Comparing checkpoints")."""
    ids = sorted(a)
    sa = np.array([a[i]["scores"]["acc"] for i in ids])
    sb = np.array([b[i]["scores"]["acc"] for i in ids])
    d = sa - sb
    n = d.size
    se = d.std(ddof=1) / math.sqrt(n)
    delta = d.mean()
    z95, z80 = norm.ppf(0.975), norm.ppf(0.80)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    # 0/1 scores: Tango's score interval (inverted numerically from the multinomial likelihood) and
    # the test it inverts, McNemar's asymptotic test without continuity correction; the exact
    # McNemar test is reported beside it.
    low, high = _tango_by_numerical_likelihood(wins, losses, n, z95)
    table = [[int(((sa == 1) & (sb == 1)).sum()), wins], [losses, int(((sa == 0) & (sb == 0)).sum())]]
    return {
        "n": n, "mean_a": sa.mean(), "mean_b": sb.mean(), "delta": delta, "stderr": se,
        "ci_low": low, "ci_high": high, "z": delta / se,
        "p_value": mcnemar(table, exact=False, correction=False).pvalue, "mde": (z95 + z80) * se,
        "wins": wins, "losses": losses, "ties": n - wins - losses,
        "mcnemar_p": binomtest(wins, wins + losses, 0.5).pvalue,
    }


def _assert_matches(report: dict, ref: dict[str, float], label: str) -> None:
    (task,) = report["tasks"]
    assert task["task_spec"] == "hellaswag:rc" and task["metric"] == "acc", label
    assert task["aggregation"] == "mean" and not task["clustered"], label
    assert task["alignment"]["n_paired"] == 40 and task["alignment"]["only_in_a"] == 0, label
    assert task["alignment"]["only_in_b"] == 0 and task["alignment"]["errored_a"] == 0, label
    stats = task["stats"]
    for key in STAT_FIELDS:
        tol = dict(abs=2e-6) if key in ("ci_low", "ci_high") else dict(rel=1e-9, abs=1e-12)  # numerical inversion
        assert stats[key] == pytest.approx(ref[key], **tol), f"{label}: {key}"
    assert task["method"] == "tango" and task["test"] == "mcnemar" and task["p_adjusted"] == stats["p_value"]
    assert stats["mde"] == pytest.approx(2.80 * stats["stderr"], rel=1e-3)
    significant = stats["p_value"] < 0.05 and abs(stats["delta"]) >= stats["mde"]
    expected = ("improved" if stats["delta"] > 0 else "regressed") if significant else "within noise"
    assert task["verdict"] == expected, label
    assert report["suite"] is None and report["unmatched"] == [], label


def test_two_checkpoints_compare_question_by_question(workdir: Path, smollm2_dir: Path) -> None:
    _perturbed_copy(smollm2_dir, workdir / "ckpt" / "step1")
    new = run_engine([*TASK, "model.path=ckpt/step1", "hydra.run.dir=runs/new"], workdir)
    assert new.returncode == 0, new.stderr[-3000:]
    base = run_engine([*TASK, "hydra.run.dir=runs/base"], workdir)
    assert base.returncode == 0, base.stderr[-3000:]
    dir_a, dir_b = workdir / "runs/new/hellaswag__rc", workdir / "runs/base/hellaswag__rc"
    rec_a = json.loads((dir_a / "experiment.json").read_text())
    rec_b = json.loads((dir_b / "experiment.json").read_text())

    # The premise of the reference computation: a plain mean over unclustered questions.
    assert rec_a["config"]["task"]["fields"]["cluster"] is None
    assert rec_a["config"]["task"].get("aggregation", "mean") == "mean"
    assert rec_a["task_hash"] == rec_b["task_hash"]
    assert rec_a["model"]["checkpoint_step"] == 1 and rec_b["model"]["checkpoint_step"] is None
    assert rec_a["model"]["content_hash"] != rec_b["model"]["content_hash"]

    a, b = _instances(dir_a), _instances(dir_b)
    assert sorted(a) == sorted(b) and len(a) == 40
    for rows in (a, b):
        assert all(r["error"] is None and not r["cached"] for r in rows.values())
        # Scoring, recomputed from the recorded per-choice logprobs.
        assert all(r["scores"]["acc"] == _recomputed_acc(r) for r in rows.values())
    for rec, rows in ((rec_a, a), (rec_b, b)):
        acc = np.array([r["scores"]["acc"] for r in rows.values()])
        assert rec["scores"]["acc"]["value"] == pytest.approx(acc.mean())
        assert rec["scores"]["acc"]["stderr"] == pytest.approx(acc.std(ddof=1) / math.sqrt(acc.size))

    # The perturbation matters, on some questions but not all.
    changed = [i for i in a if a[i]["extracted_answer"] != b[i]["extracted_answer"]]
    assert 0 < len(changed) < len(a), changed
    assert any(a[i]["scores"]["acc"] != b[i]["scores"]["acc"] for i in a)
    ref = _reference(a, b)

    # 1. Run folders.
    _assert_matches(_compare([str(dir_a), str(dir_b)], workdir), ref, "run folders")
    # 2. The MLflow store the runs wrote (sqlite:///mlruns.db in their working directory), by selector.
    uri = f"sqlite:///{workdir / 'mlruns.db'}"
    by_selector = _compare(["--tracking-uri", uri, "--experiment", "hellaswag", "model.checkpoint=step1",
                            "model.checkpoint=base"], workdir)
    _assert_matches(by_selector, ref, "MLflow selectors")
    # 3. By MLflow run id, with the run folders gone: the runs come back from MLflow's artifacts.
    shutil.move(workdir / "runs", workdir / "runs.moved")
    by_id = _compare([rec_a["mlflow_run_id"], rec_b["mlflow_run_id"], "--tracking-uri", uri], workdir)
    _assert_matches(by_id, ref, "MLflow run ids")
    assert {by_id["tasks"][0]["run_a"]["mlflow_run_id"], by_id["tasks"][0]["run_b"]["mlflow_run_id"]} == {
        rec_a["mlflow_run_id"], rec_b["mlflow_run_id"]}
    assert str(workdir / "compare-cache") in by_id["tasks"][0]["run_a"]["run_dir"]
