"""Parity with lm-evaluation-harness: the same SmolLM2 checkpoint, the same rows, the same prompts.

For each task spec (default: MMLU lettered MC, MMLU cloze, HellaSwag cloze; wheel data, offline):
1. evalbench renders its requests (context + continuations) and scores them with its HF provider
   (one shared context forward per question);
2. the rendered prompts are written to a local JSONL, and lm-eval runs a task YAML (`doc_to_text:
   "{{context}}"`, `doc_to_choice: choices`, `target_delimiter: " "`) over it with its own HF model
   wrapper on the same checkpoint directory;
3. per-choice loglikelihoods are compared (max |diff| must be ≤ 1e-3) and per-question predictions
   (argmax of the raw loglikelihood = lm-eval `acc`; per-character = lm-eval `acc_norm`) must be
   identical. Both sides and their wall times are printed.

    pip install -r benchmarks/requirements.txt
    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 python benchmarks/parity_lm_eval.py --n 50

Exit code 0 when every comparison passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

TOLERANCE = 1e-3
DEFAULT_SPECS = ["mmlu:mc", "mmlu:rc", "hellaswag:rc"]


def engine_side(spec: str, n: int, model_dir: Path, batch: int):
    """(instances, requests, responses, predictions {none, per_char}, seconds) from evalbench."""
    from engine.config.compose import compose_task
    from engine.config.schema import ModelConfig
    from engine.models.hf import HFProvider
    from engine.scoring.scorers import normalized_scores
    from engine.tasks import build_task

    cfg = compose_task(spec)
    task = build_task(cfg)
    instances = task.load_instances()[:n]
    requests = [task.build_request(i) for i in instances]
    provider = HFProvider(ModelConfig(name="smollm2-parity", path=str(model_dir), batch_size=batch))
    start = time.perf_counter()
    responses = []
    for k in range(0, len(requests), batch):
        responses += provider.loglikelihood_sync(requests[k : k + batch])
    seconds = time.perf_counter() - start
    preds = {}
    for how in ("none", "per_char"):
        preds[how] = [
            max(range(len(r.logprobs)), key=lambda j, s=normalized_scores(cfg, inst, r, how): s[j])
            for inst, r in zip(instances, responses, strict=True)
        ]
    del provider
    return cfg, instances, requests, responses, preds, seconds


def clean_checkpoint(model_dir: Path, workdir: Path) -> Path:
    """The same weights (symlinked) with the GGUF `quantization_config` left over from the conversion
    removed from config.json: lm-eval's loader rejects it, transformers' plain load ignores it."""
    out = workdir / "checkpoint"
    if out.exists():
        return out
    out.mkdir()
    for f in model_dir.iterdir():
        if f.name == "config.json":
            config = json.loads(f.read_text())
            config.pop("quantization_config", None)
            (out / f.name).write_text(json.dumps(config, indent=2))
        else:
            (out / f.name).symlink_to(f)
    return out


def lm_eval_side(spec: str, cfg, instances, requests, model_dir: Path, batch: int, workdir: Path):
    """Per-question (loglikelihoods, acc-pred, acc_norm-pred) from lm-eval, and its seconds."""
    import numpy as np
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    prefix = cfg.prompt.answer_prefix
    data = workdir / f"{spec.replace(':', '__')}.jsonl"
    with data.open("w") as f:
        for inst, req in zip(instances, requests, strict=True):
            choices = [c[len(prefix):] if c.startswith(prefix) else c for c in req.continuations]
            f.write(json.dumps({"id": inst.id, "context": req.context, "choices": choices, "gold": int(inst.gold)}) + "\n")
    task_cfg = {
        "task": f"parity_{spec.replace(':', '_')}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": prefix,
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
    }
    start = time.perf_counter()
    lm = HFLM(pretrained=str(clean_checkpoint(model_dir, workdir)), dtype="float32", batch_size=batch, device="cpu",
              max_length=2048)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[task_cfg], num_fewshot=0, log_samples=True, bootstrap_iters=0,
                          random_seed=0, numpy_random_seed=1234, torch_random_seed=1234)
    seconds = time.perf_counter() - start
    samples = next(iter(out["samples"].values()))
    by_id = {}
    for s in samples:
        lls = [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in s["resps"]]
        doc = s["doc"]
        lens = np.array([float(len(c)) for c in doc["choices"]])
        by_id[doc["id"]] = (lls, int(np.argmax(lls)), int(np.argmax(np.array(lls) / lens)), s["acc"], s["acc_norm"])
    return by_id, seconds, load_s


def compare(spec: str, n: int, model_dir: Path, batch: int, workdir: Path, show: int) -> bool:
    cfg, instances, requests, responses, preds, t_engine = engine_side(spec, n, model_dir, batch)
    lm, t_lm, t_lm_load = lm_eval_side(spec, cfg, instances, requests, model_dir, batch, workdir)
    max_diff, n_choices, agree_none, agree_norm = 0.0, 0, 0, 0
    print(f"\n=== {spec}: {len(instances)} questions, formulation {cfg.formulation}, {cfg.prompt.num_fewshot}-shot")
    for k, (inst, resp) in enumerate(zip(instances, responses, strict=True)):
        lls, p_none, p_norm, _, _ = lm[inst.id]
        diffs = [abs(a - b) for a, b in zip(resp.logprobs, lls, strict=True)]
        max_diff = max(max_diff, *diffs)
        n_choices += len(diffs)
        agree_none += preds["none"][k] == p_none
        agree_norm += preds["per_char"][k] == p_norm
        if k < show:
            print(f"  [{inst.id}] gold={inst.gold}  evalbench pred {preds['none'][k]}/{preds['per_char'][k]}"
                  f"  lm-eval pred {p_none}/{p_norm}  (raw/per-char)")
            for c, a, b in zip(requests[k].continuations, resp.logprobs, lls, strict=True):
                print(f"      {c[:48]!r:52} evalbench {a:11.5f}  lm-eval {b:11.5f}  |diff| {abs(a - b):.2e}")
    q = len(instances)
    ok = max_diff <= TOLERANCE and agree_none == q and agree_norm == q
    acc_e = sum(preds["none"][k] == inst.gold for k, inst in enumerate(instances)) / q
    acc_l = sum(lm[inst.id][3] for inst in instances) / q
    accn_e = sum(preds["per_char"][k] == inst.gold for k, inst in enumerate(instances)) / q
    accn_l = sum(lm[inst.id][4] for inst in instances) / q
    print(f"  per-choice loglikelihoods: {n_choices} compared, max |diff| = {max_diff:.3e} (tolerance {TOLERANCE:g})")
    print(f"  predictions identical: raw {agree_none}/{q}, per-char {agree_norm}/{q}")
    print(f"  accuracy: evalbench acc {acc_e:.4f} acc_per_char {accn_e:.4f} | lm-eval acc {acc_l:.4f} acc_norm {accn_l:.4f}")
    print(f"  time (scoring, model loaded): evalbench {t_engine:.1f} s | lm-eval {t_lm:.1f} s (+{t_lm_load:.1f} s load)")
    print(f"  {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="questions per task spec (the first N after sampling)")
    ap.add_argument("--specs", nargs="*", default=DEFAULT_SPECS, help="evalbench task specs (wheel data)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--show", type=int, default=2, help="questions printed in full per spec")
    args = ap.parse_args()
    from engine.models.embedded import embedded_checkpoint_dir

    model_dir = embedded_checkpoint_dir()
    print(f"checkpoint: {model_dir}")
    with tempfile.TemporaryDirectory(prefix="parity_") as tmp:
        results = {spec: compare(spec, args.n, model_dir, args.batch, Path(tmp), args.show) for spec in args.specs}
    print("\nsummary: " + ", ".join(f"{s} {'PASS' if ok else 'FAIL'}" for s, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
