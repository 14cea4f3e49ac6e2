"""Generation speed: evalbench's in-process hf provider against lm-evaluation-harness and its own plain path.

Rows (the same rows, prompts and SmolLM2 checkpoint on both sides, CPU fp32, greedy unless said):
- gsm8k (GSM8K 8-shot chain of thought) and humaneval (HumanEval greedy): evalbench runs cold as a
  user runs it (`python -m engine task=... limit=N`, fresh cache, `tracking=none`) under
  `/usr/bin/time -v` (wall, peak RSS); the prompts it sent, rendered as its provider renders them
  (chat template included), become a local lm-eval `generate_until` task run by lm-eval 0.4.13's
  own `hf` backend (batch 8, fp32, the same max tokens and stops) in its own venv
  (`python -m engine.external.venvs lm_eval`);
- pass_at_10 (`task=humaneval variant=pass_at_10`, 10 seeded samples per question) and agent
  (`task=ellisande_qa harness=search_agent model=smollm2_tools`): evalbench's prefix engine
  (`model.generation_engine=prefix`, every row's evalbench side) against its own plain path (`model.generation_engine=plain`,
  transformers' `generate`).

Per row: wall, generated tokens per second, peak RSS, output agreement (identical outputs; each
difference is checked for a float32 near-tie: the plain transformers model's top-2 logits at the
first divergent token within 1e-3), and the compute floor: (distinct prompt tokens, a prefix shared
by several prompts counted once, plus generated tokens) x 2 x non-embedding parameters / the
machine's fp32 GEMM rate (as benchmarks/loglikelihood_speed.py measures it). The agent row's floor
counts every turn's whole prompt (no sharing), an upper bound. A failed run or a missed target
prints a line containing FAIL.

    python benchmarks/generation_speed.py                          # every row (over an hour)
    python benchmarks/generation_speed.py --rows gsm8k --limit 8

Timings on a shared machine are noisy: ratios come from one invocation.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from loglikelihood_speed import ENV, LM_EVAL_PY, REPO, gemm_rate, non_embedding_params
from parity_lm_eval import clean_checkpoint  # the same symlinked, de-GGUF'd weights lm-eval loads

# Timeouts far above any run here: on a loaded machine a request past the default 600 s was retried
# (the work done twice) and an agent's 300 s budget ended trajectories early on one side only.
PATIENT = ["harness.request_timeout_s=36000"]
AGENT_PATIENT = ["harness.max_time_s=36000"]
# row -> (evalbench overrides, default questions, peer: "lm_eval" or "plain", target speed-up over the peer)
# Each row's evalbench settings (both evalbench paths where the peer is the plain path): 16 decode rows
# for GSM8K and pass@10 (the plain path generates a seeded sample alone, whatever the batch size);
# the agent's 24 trajectories at once (the search_agent preset runs 2) with 24 rows on both paths.
ROWS: dict[str, tuple[list[str], int, str, float]] = {
    "gsm8k": (["task=gsm8k", "model.batch_size=16"], 100, "lm_eval", 3.0),
    "humaneval": (["task=humaneval"], 164, "lm_eval", 2.0),
    "pass_at_10": (["task=humaneval", "variant=pass_at_10", "model.batch_size=16"], 20, "plain", 3.0),
    "agent": (["task=ellisande_qa", "harness=search_agent", "model=smollm2_tools", "harness.concurrency=24",
               "model.batch_size=24", *AGENT_PATIENT], 24, "plain", 2.0),
}
NEAR_TIE = 1e-3  # top-2 logit gap under which float32 rounding may pick either token


def timed_or_none(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str] | None:
    """(wall s, peak RSS MB, stderr) of argv under /usr/bin/time -v; None (its error printed) when it fails."""
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-3000:]}", flush=True)
        return None
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, int(rss.group(1)) // 1024 if rss else -1, proc.stderr


def evalbench(overrides: list[str], work: Path, name: str) -> dict[str, Any] | None:
    argv = [sys.executable, "-m", "engine", *overrides, *PATIENT, "tracking=none", "progress=false",
            f"cache.path={work / (name + '.sqlite')}", f"hydra.run.dir={work / name}"]
    run = timed_or_none(argv, work, ENV)
    if run is None:
        return None
    wall, rss, _ = run
    records = [json.loads(line) for line in next((work / name).rglob("instances.jsonl")).read_text().splitlines()]
    return {"wall": wall, "rss": rss, "records": records}


def rendered_prompts(records: list[dict], provider: Any) -> dict[str, str]:
    from engine.types import GenerateRequest

    return {r["instance_id"]: provider.render_prompt(GenerateRequest(**r["request"])) for r in records}


def lm_eval(row: str, records: list[dict], prompts: dict[str, str], checkpoint: Path, work: Path) -> dict | None:
    name = f"ebgen_{row}"
    data = work / f"{row}.jsonl"
    with data.open("w") as f:
        for r in records:
            f.write(json.dumps({"id": r["instance_id"], "prompt": prompts[r["instance_id"]]}) + "\n")
    sampling = records[0]["request"]["sampling"]
    tasks = work / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{name}.yaml").write_text(json.dumps({
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "",
        "target_delimiter": "", "generation_kwargs": {"until": list(sampling["stop"]), "do_sample": False,
                                                       "max_gen_toks": sampling["max_tokens"]},
        "metric_list": [{"metric": "exact_match"}]}))
    env = {**ENV, "HF_DATASETS_CACHE": str(work / "hf-datasets")}
    env.pop("PYTHONPATH")
    argv = [str(LM_EVAL_PY), "-m", "lm_eval", "run", "--model", "hf", "--model_args",
            f"pretrained={checkpoint},dtype=float32,max_length=2048", "--device", "cpu", "--batch_size", "8",
            "--tasks", name, "--include_path", str(tasks), "--num_fewshot", "0", "--output_path",
            str(work / "lm-out"), "--log_samples"]
    run = timed_or_none(argv, work, env)
    if run is None:
        return None
    wall, rss, _ = run
    outs = {}
    for line in sorted((work / "lm-out").rglob(f"samples_{name}_*.jsonl"))[-1].read_text().splitlines():
        s = json.loads(line)
        resp = s["filtered_resps"][0]
        outs[str(s["doc"]["id"])] = resp if isinstance(resp, str) else resp[0]
    return {"wall": wall, "rss": rss, "outputs": outs}


def key(r: dict) -> tuple[str, int]:
    return r["instance_id"], r.get("sample_index", 0)


def trajectory(r: dict) -> Any:
    """What an agent run did, without timings: the output and every step's type and content, less
    its durations (`provider_s`, `work_s`, ...) and the limit's wording of them (`detail`)."""
    return r.get("output_text"), [(s["type"], {k: v for k, v in s["content"].items()
                                               if not k.endswith("_s") and k != "detail"})
                                  for s in r.get("trajectory") or []]


def near_tie(provider: Any, prompt: str, a: str, b: str) -> bool:
    """The plain transformers model's top-2 logits at the first token where `a` and `b` differ are
    within NEAR_TIE (float32 rounding may choose either)."""
    import torch  # deferred: the benchmark's own check

    tok = provider.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    x, y = tok(a, add_special_tokens=False)["input_ids"], tok(b, add_special_tokens=False)["input_ids"]
    common = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
    with torch.inference_mode():
        top = provider.model(torch.tensor([ids[-2000:] + x[:common]])).logits[0, -1].topk(2).values
    return float(top[0] - top[1]) < NEAR_TIE


def distinct_prompt_tokens(prompts: list[str], provider: Any) -> int:
    """Prompt tokens with a prefix shared by several prompts counted once (the nodes of their trie)."""
    trie: dict = {}
    count = 0
    for p in prompts:
        node = trie
        for t in provider.tokenizer(p, add_special_tokens=False)["input_ids"]:
            if t not in node:
                node[t] = {}
                count += 1
            node = node[t]
    return count


def agreement(row: str, ev: dict, peer: dict, prompts: dict[str, str], provider: Any) -> tuple[int, int, int]:
    """(identical, near-ties, unexplained differences) over the row's outputs."""
    same = ties = 0
    diff = 0
    if "outputs" in peer:  # lm-eval: texts by instance id
        pairs = [(r["instance_id"], r.get("output_text") or "", peer["outputs"].get(r["instance_id"], "")) for r in ev["records"]]
    else:
        theirs = {key(r): r for r in peer["records"]}
        pairs = [(r["instance_id"], r, theirs.get(key(r))) for r in ev["records"]]
    for iid, a, b in pairs:
        if isinstance(a, dict):
            if b is not None and trajectory(a) == trajectory(b):
                same += 1
                continue
            a, b = a.get("output_text") or "", (b or {}).get("output_text") or ""
            if row == "agent":  # a trajectory differs: no single prompt to check for a tie
                diff += 1
                continue
        if a == b:
            same += 1
        elif near_tie(provider, prompts[iid], a, b):
            ties += 1
        else:
            diff += 1
    return same, ties, diff


def generated(records: list[dict]) -> int:
    return sum(r.get("completion_tokens") or 0 for r in records)


def run_row(row: str, n: int, tmp: Path, checkpoint: Path, provider: Any, params: int, rate: float,
            extra: tuple[str, ...] = ()) -> bool:
    overrides, _, peer_kind, target = ROWS[row]
    work = tmp / row
    work.mkdir()
    ev = evalbench([*overrides, f"limit={n}", "model.generation_engine=prefix", *extra], work, "evalbench")
    if ev is None:
        print(f"FAIL {row}: the evalbench run failed (see above)", flush=True)
        return False
    prompts = rendered_prompts(ev["records"], provider)
    if peer_kind == "lm_eval":
        peer = lm_eval(row, ev["records"], prompts, checkpoint, work)
        peer_tokens = sum(len(provider.tokenizer(t, add_special_tokens=False)["input_ids"])
                          for t in (peer or {}).get("outputs", {}).values())
    else:
        peer = evalbench([*overrides, f"limit={n}", "model.generation_engine=plain", *extra], work, "plain")
        peer_tokens = generated(peer["records"]) if peer else 0
    if peer is None:
        print(f"FAIL {row}: the {peer_kind} run failed (see above)", flush=True)
        return False
    if row == "agent":
        tokens = sum((r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0) for r in ev["records"])
    else:
        tokens = distinct_prompt_tokens(list(prompts.values()), provider) + generated(ev["records"])
    floor = tokens * 2 * params / rate / 1e9
    same, ties, diff = agreement(row, ev, peer, prompts, provider)
    speedup = peer["wall"] / ev["wall"]
    # The memory target is lm-eval's peak RSS; against the plain path (pass@10, agent) the RSS is
    # printed: the prefix engine holds keys and values (its prefix cache, its decode slots) by design.
    ok = speedup >= target and diff == 0 and (peer_kind != "lm_eval" or ev["rss"] <= peer["rss"])
    print(f"{row:10} {len(ev['records']):>4} {floor:>7.1f} | {ev['wall']:>8.1f} {ev['wall'] / floor:>7.1f} "
          f"{generated(ev['records']) / ev['wall']:>6.1f} {ev['rss']:>6} | {peer_kind:>7} {peer['wall']:>8.1f} "
          f"{peer_tokens / peer['wall']:>6.1f} {peer['rss']:>6} | {speedup:>6.2f}x {target:>4.1f}x | "
          f"{same:>4}/{len(ev['records']):<4} {ties:>4} {diff:>4}", flush=True)
    if not ok:
        print(f"FAIL {row}: speed-up {speedup:.2f}x (target {target}x), {diff} unexplained differences, "
              f"RSS {ev['rss']} MB vs {peer['rss']} MB", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--limit", type=int, default=None, help="questions per row (default: the row's own)")
    ap.add_argument("--evalbench", action="append", default=[], metavar="OVERRIDE",
                    help="an override for evalbench's runs (both paths), e.g. model.batch_size=16; repeatable")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="work in DIR and keep it (every run's records, lm-eval's samples) instead of a temporary folder")
    args = ap.parse_args()
    if args.keep is not None:
        if taken := [r for r in args.rows if (args.keep / r).exists()]:
            ap.error(f"{args.keep} already holds a run of {', '.join(taken)}: name a new folder for --keep")
        args.keep.mkdir(parents=True, exist_ok=True)
    if any(ROWS[r][2] == "lm_eval" for r in args.rows) and not LM_EVAL_PY.exists():
        sys.exit(f"lm-eval's venv is missing ({LM_EVAL_PY}): create it with `python -m engine.external.venvs lm_eval`")
    sys.path.insert(0, str(REPO))
    from engine.config.schema import ModelConfig
    from engine.models.embedded import embedded_checkpoint_dir
    from engine.models.hf import HFProvider

    model_dir = embedded_checkpoint_dir()
    params = non_embedding_params(model_dir)
    rate = gemm_rate()
    provider = HFProvider(ModelConfig(name="smollm2-135m-instruct", generation_engine="plain"))
    print(f"fp32 GEMM rate (torch, 2 threads, 2048^3): {rate:.1f} GFLOP/s; non-embedding parameters {params / 1e6:.1f} M")
    print(f"{'row':10} {'n':>4} {'floor s':>7} | {'evalbench':>8} {'x floor':>7} {'tok/s':>6} {'RSS MB':>6} | "
          f"{'peer':>7} {'s':>8} {'tok/s':>6} {'RSS MB':>6} | {'speedup':>7} {'target':>5} | {'same':>9} {'ties':>4} {'diff':>4}")
    ok = True
    with (nullcontext(str(args.keep)) if args.keep is not None else tempfile.TemporaryDirectory(prefix="genspeed_")) as tmp:
        checkpoint = clean_checkpoint(model_dir, Path(tmp))
        for row in args.rows:
            ok &= run_row(row, args.limit or ROWS[row][1], Path(tmp), checkpoint, provider, params, rate,
                          tuple(args.evalbench))
    print("all targets met" if ok else "FAIL: some targets missed (see the rows above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
