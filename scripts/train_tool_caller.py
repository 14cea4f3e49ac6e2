"""Train the tool-calling SmolLM2 (`make tool-model`): `model=smollm2_tools` then evaluates it.

    python scripts/train_tool_caller.py                 # the full training (~5-8 min on 2 CPU cores)
    python scripts/train_tool_caller.py --examples 4 --epochs 1 --out /tmp/tiny   # a tiny run

Synthetic trajectories of the `search_agent` harness over the local corpus (engine/harness/
tool_training.py: train entities and wordings only, never the evaluation rows) are rendered with the
checkpoint's tools-aware chat template, and the top layers are fine-tuned on the assistant turns
(engine/models/tool_caller_train.py). Deterministic given --seed. The loss of every step goes to
MLflow (experiment `train_tool_caller`, the same store as evaluation runs: --tracking-uri, default
sqlite:///mlruns.db as in conf/tracking/sqlite.yaml). The checkpoint lands in
$EVALBENCH_HOME/models/smollm2-135m-tools with its training config and data hash
(evalbench_training.json), which the model identity carries (docs/architecture.md, "Agents that use tools").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.harness.tool_training import data_hash, render, trajectories
from engine.models.embedded import embedded_checkpoint_dir
from engine.models.tool_caller import TOOLS_CHAT_TEMPLATE, tool_model_dir
from engine.models.tool_caller_train import TrainConfig, train_tool_caller


def training_texts(cfg: TrainConfig, base: Path) -> list[str]:
    from transformers import AutoTokenizer  # deferred: heavy

    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = TOOLS_CHAT_TEMPLATE
    # The text protocol's rendering; the native one renders the same tokens (tests/harness/test_tool_caller.py).
    return [render(tok, msgs) for msgs in trajectories(cfg.examples, cfg.seed, "text")]


def train(cfg: TrainConfig, out: Path, tracking_uri: str | None = None, quiet: bool = False) -> dict[str, Any]:
    base = embedded_checkpoint_dir()
    texts = training_texts(cfg, base)
    digest = data_hash(texts)
    mlflow_run: Any = None
    if tracking_uri:
        from engine.record import store  # deferred: mlflow (sqlalchemy) only when tracking

        client = store.client(tracking_uri)
        exp = client.get_experiment_by_name("train_tool_caller")
        exp_id = exp.experiment_id if exp else client.create_experiment("train_tool_caller")
        mlflow_run = client.create_run(exp_id, run_name=f"smollm2-tools seed{cfg.seed}",
                                       tags={"evalbench.kind": "training", "data_hash": digest})
        for k, v in cfg.model_dump().items():
            client.log_param(mlflow_run.info.run_id, k, v)

    def on_step(step: int, loss: float) -> None:
        if not quiet:
            print(f"step {step:3d}  loss {loss:.4f}", flush=True)
        if mlflow_run is not None:
            client.log_metric(mlflow_run.info.run_id, "loss", loss, step=step)

    if not quiet:
        print(f"[train_tool_caller] {len(texts)} trajectories, data hash {digest} -> {out}", flush=True)
    summary = train_tool_caller(base, out, texts, cfg, digest, on_step)
    if mlflow_run is not None:
        client.log_metric(mlflow_run.info.run_id, "train_seconds", summary["total_s"])
        client.set_terminated(mlflow_run.info.run_id)
    if not quiet:
        print(f"[train_tool_caller] done in {summary['total_s']:.0f} s (frozen part {summary['frozen_s']:.0f} s), "
              f"final loss {summary['losses'][-1]:.4f}; checkpoint {out}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
