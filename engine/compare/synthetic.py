"""Synthetic run folders written with the real record models, for tests, benchmarks and demos."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine import __version__
from engine.stats import summarize
from engine.types import (
    InstanceError,
    InstanceRecord,
    ModelIdentity,
    RunCounts,
    RunRecord,
    ScoreSummary,
    TrajectoryStep,
)

LETTERS = "ABCD"


def write_run(
    run_dir: Path,
    *,
    task_spec: str,
    correct: Sequence[float] | np.ndarray,
    model: str = "smollm2-135m",
    step: int | None = None,
    ids: Sequence[str] | None = None,
    task_hash: str | None = None,
    suite: str | None = None,
    errored: Sequence[str] = (),
    samples: int = 1,
    seed: int = 0,
    clusters: Sequence[str] | None = None,
    trajectory_every: int = 0,
    experiment_name: str = "synthetic",
    run_id: str | None = None,
    created: str = "2025-01-01T00:00:00",
    fast: bool = False,
    aggregation: str = "mean",
    suite_config: dict[str, Any] | None = None,
) -> RunRecord:
    """One run folder: MC questions whose per-question score is `correct[i]` (the mean over samples).

    With samples=K the K sample scores are 0/1 values whose mean is the nearest multiple of 1/K.
    `fast` skips pydantic per instance (same JSON shape) for very large benchmarks.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    th = task_hash or f"h-{task_spec}"
    n = len(correct)
    ids = list(ids) if ids is not None else [f"q{i:06d}" for i in range(n)]
    err = set(errored)
    lines: list[str] = []
    scored: list[float] = []
    for i, (iid, c) in enumerate(zip(ids, correct, strict=True)):
        gold = LETTERS[i % 4]
        k_right = int(round(float(c) * samples))
        for s in range(samples):
            ok = s < k_right
            lp = [float(x) for x in np.round(rng.normal(-3.0, 1.0, 4), 4)]
            gi = LETTERS.index(gold)
            lp[gi] = max(lp) + 0.5 if ok else min(lp) - 0.5
            pred = LETTERS[int(np.argmax(lp))]
            base: dict[str, Any] = dict(
                task_hash=th, task_spec=task_spec, instance_id=iid, sample_index=s,
                prompt_text=f"Question {iid}: which letter is {gold.lower()}?\nA. a\nB. b\nC. c\nD. d\nAnswer:",
                gold=gold, choices=list(LETTERS), cluster=clusters[i] if clusters else None,
            )
            rec: dict[str, Any]
            if iid in err:
                rec = dict(base, error=dict(kind="timeout", message="provider timed out", attempts=3))
            else:
                traj: list[dict[str, Any]] = []
                if trajectory_every and i % trajectory_every == 0:
                    traj = [
                        dict(type="model", content={"text": f"I think {pred}"}),
                        dict(type="tool_call", content={"name": "python_exec", "args": {"code": "print(1)"}}),
                        dict(type="tool_result", content={"output": "1"}),
                    ]
                rec = dict(base, output_text=f" {pred}", logprobs=lp, extracted_answer=pred,
                           scores={"acc": 1.0 if ok else 0.0}, latency_s=0.01, trajectory=traj)
            if fast:
                rec.setdefault("error", None)
                lines.append(json.dumps(rec))
            else:
                if rec.get("error"):
                    rec["error"] = InstanceError(**rec["error"])
                rec["trajectory"] = [TrajectoryStep(**t) for t in rec.get("trajectory", [])]
                lines.append(InstanceRecord(**rec).model_dump_json())
        if iid not in err:
            scored.append(k_right / samples)
    (run_dir / "instances.jsonl").write_text("\n".join(lines) + "\n")
    summ = summarize(scored)
    ms = ScoreSummary(value=summ.value, n=summ.n, stderr=summ.stderr, ci_low=summ.ci_low, ci_high=summ.ci_high, mde=summ.mde)
    record = RunRecord(
        run_id=run_id or f"{model}-{step}-{task_spec}",
        experiment_id="exp-synthetic",
        experiment_name=experiment_name,
        created=created,
        engine_version=__version__,
        git_revision=None,
        config={"model": {"name": model, "path": f"/ckpt/{model}", "checkpoint_step": step}, "task": {"name": task_spec.split(":")[0], "aggregation": aggregation},
                "suite": suite_config},
        model=ModelIdentity(name=model, provider="hf", checkpoint_step=step),
        task_spec=task_spec,
        task_name=task_spec.split(":")[0],
        task_hash=th,
        harness="single_turn",
        suite=suite,
        seeds={"fewshot": 1234},
        status="finished",
        duration_s=1.0,
        counts=RunCounts(n=n, scored=n - len(err), errored=len(err)),
        primary_metric="acc",
        scores={"acc": ms},
        run_dir=str(run_dir),
    )
    (run_dir / "experiment.json").write_text(record.model_dump_json(indent=2))
    (run_dir / "metrics.json").write_text(json.dumps({"acc": ms.model_dump(mode="json")}))
    return record
