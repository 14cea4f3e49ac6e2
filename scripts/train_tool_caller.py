"""Train the tool-calling SmolLM2 (`make tool-model`): `model=smollm2_tools` then evaluates it.

    python scripts/train_tool_caller.py                 # the full training (see README for the time)
    python scripts/train_tool_caller.py --examples 4 --epochs 1 --out /tmp/tiny   # a tiny run

Synthetic trajectories of the `search_agent` harness over the training documents of the local corpus
(engine/training/trajectories.py: train entities and wordings only, never the evaluation rows, and no
document that names an evaluation entity in any search result or fetched page) are rendered with the
checkpoint's tools-aware chat template, and the top layers are fine-tuned on the assistant turns
(engine/training/finetune.py). Deterministic given --seed. The loss of every step goes to
MLflow (experiment `train_tool_caller`, the same store as evaluation runs: --tracking-uri, default
sqlite:///mlruns.db as in conf/tracking/sqlite.yaml). The checkpoint lands in
$EVALBENCH_HOME/models/smollm2-135m-tools with its training config and data hash
(evalbench_training.json), which the model identity carries (docs/architecture.md, "Agents that use tools").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine.models.tool_caller import tool_model_dir
from engine.training.finetune import TrainConfig
from engine.training.trajectories import build_tool_caller


def train(cfg: TrainConfig, out: Path, tracking_uri: str | None = None) -> dict[str, Any]:
    client: Any = None
    run_id: str | None = None
    if tracking_uri:
        from engine.record import store  # deferred: mlflow (sqlalchemy) only when tracking

        client = store.client(tracking_uri)
        exp = client.get_experiment_by_name("train_tool_caller")
        exp_id = exp.experiment_id if exp else client.create_experiment("train_tool_caller")
        run_id = client.create_run(exp_id, run_name=f"smollm2-tools seed{cfg.seed}",
                                   tags={"evalbench.kind": "training"}).info.run_id
        for k, v in cfg.model_dump().items():
            client.log_param(run_id, k, v)
    started = time.monotonic()

    def on_data(texts: list[str], digest: str) -> None:
        print(f"[train_tool_caller] {len(texts)} trajectories, data hash {digest} -> {out}", flush=True)
        if run_id is not None:
            client.log_param(run_id, "data_hash", digest)

    def on_step(step: int, loss: float) -> None:
        print(f"step {step:3d}  loss {loss:.4f}  ({time.monotonic() - started:.0f} s)", flush=True)
        if run_id is not None:
            client.log_metric(run_id, "loss", loss, step=step)

    summary = build_tool_caller(cfg, out, on_step, on_data)
    if run_id is not None:
        client.log_metric(run_id, "train_seconds", summary["total_s"])
        client.set_terminated(run_id)
    print(f"[train_tool_caller] done in {summary['total_s']:.0f} s (frozen part {summary['frozen_s']:.0f} s), "
          f"final loss {summary['losses'][-1]:.4f}; checkpoint {out}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--examples", type=int, default=d.examples)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--train-layers", type=int, default=d.train_layers)
    ap.add_argument("--out", type=Path, default=None, help="default: $EVALBENCH_HOME/models/smollm2-135m-tools")
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns.db", help="MLflow store; 'none' to skip")
    a = ap.parse_args(argv)
    cfg = TrainConfig(seed=a.seed, examples=a.examples, epochs=a.epochs, batch=a.batch, lr=a.lr,
                      train_layers=a.train_layers)
    out = a.out or tool_model_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    train(cfg, out, None if a.tracking_uri == "none" else a.tracking_uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
