"""The `inspect` wrapper: an inspect_ai task (its own solver and scorer) run by `inspect eval` inside
the wrapper's container (SandboxedExternalEval), against the model gateway through inspect's generic
`openai-api` provider (docs/architecture.md, "External evals").

The dataset is the task's selected instances, written as JSON Lines that inspect reads with its own
`json_dataset` (id, input, choices, target letter, metadata). The task file is one of TASKS, written
beside it: inspect's `multiple_choice()` solver with its `choice()` scorer, or `generate()` with
`match()`. inspect writes a JSON log (`--log-format json`); its samples' scores become our per-sample
scores (inspect's own value-to-float rule: C=1, I=0, P=0.5, N=0), its metrics the benchmark aggregate.
With `external.args.log_samples: false` inspect logs no samples: the run is recorded aggregate-only.

Arguments (`external.args`): `task` (a key of TASKS), `metrics` ({inspect scorer name: our name}),
`max_tokens` (default 32), `log_samples` (default true), `limits` (container limits,
engine/external/sandboxed.py), `extra_args` (more `inspect eval` flags).
"""

from __future__ import annotations

import json
import string
from typing import Any

from engine.config.errors import ConfigError
from engine.config.schema import ExternalConfig
from engine.external.base import ExternalOutput, ExternalSample, OutputError, WrapperContext
from engine.external.images import ImageRecipe, ensure_image, recipe_from_lock

VERSION = "0.3.285"  # inspect-ai, pinned in recipes.py LOCKS["inspect"] (a test keeps them equal)
SERVICE = "evalbench"  # openai-api/<service>/<model>: inspect reads EVALBENCH_BASE_URL and EVALBENCH_API_KEY

_HEADER = '''"""An inspect_ai task over the rows evalbench selected (written by engine/external/inspect_wrapper.py)."""
from inspect_ai import Task, task
from inspect_ai.dataset import FieldSpec, json_dataset
from inspect_ai.scorer import choice, match
from inspect_ai.solver import generate, multiple_choice

FIELDS = FieldSpec(input="input", target="target", id="id", choices="choices", metadata=["cluster"])
'''
TASKS: dict[str, str] = {
    "multiple_choice": _HEADER + '''

@task
def evalbench_multiple_choice(data: str) -> Task:
    return Task(dataset=json_dataset(data, FIELDS), solver=multiple_choice(), scorer=choice())
''',
    "match": _HEADER + '''

@task
def evalbench_match(data: str) -> Task:
    return Task(dataset=json_dataset(data, FIELDS), solver=generate(), scorer=match(numeric=True))
''',
}
VALUES = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0, "yes": 1.0, "no": 0.0, "true": 1.0, "false": 0.0}


def _to_float(value: Any) -> float | None:
    """inspect's `value_to_float` for the scalar values its scorers give."""
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        if value in VALUES or value.lower() in VALUES:
            return VALUES.get(value, VALUES.get(value.lower()))
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts: the text ones, as the gateway joins them
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _request_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The conversation before each assistant turn, rendered as the gateway renders a chat request
    (`GenerateRequest.render_text`): how its gateway requests are found."""
    return ["\n".join(f"[{m.get('role')}] {_text(m.get('content'))}" for m in messages[:i])
            for i, m in enumerate(messages) if m.get("role") == "assistant"]


class InspectWrapper:
    name = "inspect"

    def recipe(self) -> ImageRecipe:
        return recipe_from_lock("inspect")

    def check_installed(self, external: ExternalConfig) -> None:
        task = external.args.get("task", "multiple_choice")
        if task not in TASKS:
            raise ConfigError(
                f"`external.args.task` is {task!r}, but the inspect wrapper knows only {', '.join(sorted(TASKS))}. "
                "Fix: use one of them, or add an inspect task file to engine/external/inspect_wrapper.py TASKS."
            )
        ensure_image(self.recipe())  # docker, the base image, then the build if needed (ConfigError, exit 2)

    def command(self, ctx: WrapperContext) -> tuple[list[str], dict[str, str]]:
        args = ctx.external.args
        task = args.get("task", "multiple_choice")
        data = ctx.workdir / "dataset.jsonl"
        with open(data, "w") as fh:
            for item in ctx.items:
                letters = string.ascii_uppercase
                target = letters[item.gold] if item.choices and isinstance(item.gold, int) else str(item.gold)
                fh.write(json.dumps({"id": item.id, "input": item.query, "choices": item.choices, "target": target,
                                     "cluster": item.cluster}) + "\n")
        (ctx.workdir / "task.py").write_text(TASKS[task])
        argv = ["inspect", "eval", f"{ctx.bench_path('task.py')}@evalbench_{task}", "-T",
                f"data={ctx.bench_path('dataset.jsonl')}", "--model", f"openai-api/{SERVICE}/{ctx.model_name}",
                "--log-dir", ctx.bench_path("logs"), "--log-format", "json", "--display", "plain",
                "--max-connections", str(ctx.exp.harness.concurrency), "--max-tokens", str(args.get("max_tokens", 32)),
                "--temperature", "0", "--seed", str(ctx.exp.seed), "--max-retries", "2",
                *([] if args.get("log_samples", True) else ["--no-log-samples"]),
                *[str(a) for a in args.get("extra_args", [])]]
        env = {f"{SERVICE.upper()}_BASE_URL": ctx.base_url, f"{SERVICE.upper()}_API_KEY": "evalbench",
               "INSPECT_LOG_LEVEL": "warning"}
        return argv, env

    def parse(self, ctx: WrapperContext) -> ExternalOutput:
        renames: dict[str, str] = dict(ctx.external.args.get("metrics") or {})
        logs = sorted((ctx.workdir / "logs").glob("*.json"))
        if not logs:
            raise OutputError(f"inspect wrote no JSON log under {ctx.workdir / 'logs'}")
        try:
            log = json.loads(logs[-1].read_text())
        except ValueError as err:
            raise OutputError(f"inspect's log {logs[-1].name} cannot be read ({err})") from None
        if log.get("status") != "success":
            error = (log.get("error") or {}).get("message") or "no error message"
            raise OutputError(f"inspect's eval ended with status {log.get('status')!r}: {error}")
        results = log.get("results") or {}
        aggregate: dict[str, float] = {}
        for score in results.get("scores") or []:
            name = renames.get(score["name"], score["name"])
            for metric, m in (score.get("metrics") or {}).items():
                if metric == "stderr" or not isinstance(m.get("value"), int | float):
                    continue
                aggregate[name if metric in ("accuracy", "mean") else f"{name}_{metric}"] = float(m["value"])
        n = int(results.get("completed_samples") or results.get("total_samples") or 0)
        if "samples" not in log or not log["samples"]:
            return ExternalOutput(samples=None, aggregate=aggregate, n=n)
        try:
            samples = [_sample(s, renames) for s in log["samples"]]
        except (KeyError, TypeError, ValueError) as err:
            raise OutputError(f"a sample of inspect's log {logs[-1].name} cannot be read ({err!r})") from None
        return ExternalOutput(samples=samples, aggregate=aggregate, n=n or len(samples))


def _sample(s: dict[str, Any], renames: dict[str, str]) -> ExternalSample:
    scores: dict[str, float] = {}
    extracted = None
    for name, score in (s.get("scores") or {}).items():
        value = _to_float(score.get("value"))
        if value is None:
            raise ValueError(f"score {name!r} of sample {s.get('id')!r} is {score.get('value')!r}, not a scalar")
        scores[renames.get(name, name)] = value
        extracted = extracted if extracted is not None else (score.get("answer") or None)
    choices = s.get("choices") or None
    target = s.get("target")
    gold: Any = target if isinstance(target, str) else (target[0] if target else None)
    if choices and isinstance(gold, str) and len(gold) == 1 and gold in string.ascii_uppercase:
        gold = string.ascii_uppercase.index(gold)  # a choice index, as native choice tasks record it
        if isinstance(extracted, str) and len(extracted) == 1 and extracted in string.ascii_uppercase:
            extracted = string.ascii_uppercase.index(extracted)
    messages = s.get("messages") or []
    output = (s.get("output") or {}).get("completion")
    inp = s.get("input")
    prompt = inp if isinstance(inp, str) else "\n".join(_text(m.get("content")) for m in inp or [])
    return ExternalSample(instance_id=str(s["id"]), prompt=prompt, response=output, choices=choices, gold=gold,
                          extracted=extracted, scores=scores, request_texts=_request_texts(messages))

