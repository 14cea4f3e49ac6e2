"""`@metric` (a user's aggregation over per-instance scores) and per-task variants
(docs/architecture.md, "Extensions"). Fast: no model, no subprocess."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from engine import list as engine_list
from engine.config.compose import compose_experiment, compose_task, parse_task_spec
from engine.config.errors import ConfigError
from engine.config.paths import set_cli_searchpath
from engine.config.prepare import prepare
from engine.config.schema import TaskConfig
from engine.extend import GenerateResponse, metric, register_variant, scorer
from engine.scoring import aggregate_scores, score_response
from engine.scoring.registry import METRICS
from engine.stats import Z_95, summarize
from engine.tasks import Instance, Task
from engine.types import InstanceRecord


@scorer(metrics=["tp", "fp", "fn"])
def t_token_counts(cfg, inst, response) -> dict[str, float]:
    """Token overlap of the answer with the gold: true positives, false positives, false negatives."""
    said, gold = set(response.text.lower().split()), set(str(inst.gold).lower().split())
    return {"tp": len(said & gold), "fp": len(said - gold), "fn": len(gold - said)}


@metric(inputs=["tp", "fp", "fn"])
def t_micro_f1(rows: list[dict[str, float]]) -> float:
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    return 2 * tp / max(2 * tp + fp + fn, 1)


@metric(name="t_f1", inputs=["tp", "fp", "fn"], per_instance=True)
def _per_question_f1(row: dict[str, float]) -> float:
    return 2 * row["tp"] / max(2 * row["tp"] + row["fp"] + row["fn"], 1)


register_variant("arc_easy", "t_seed9", num_fewshot=1, **{"fewshot.seed": 9})

TASK = {"name": "toy", "formulation": "generate", "data": {"path": "json"}, "fields": {"gold": "answer"},
        "scorers": ["t_token_counts"], "metrics": ["t_micro_f1", "t_f1"], "primary_metric": "t_micro_f1"}
ANSWERS = [("paris", "paris"), ("the city of rome", "rome"), ("tokyo", "kyoto"), ("lima peru", "lima"),
           ("nairobi", "nairobi"), ("a b c d", "a")]


def _records() -> list[InstanceRecord]:
    task = Task(TaskConfig.model_validate(TASK))
    out = []
    for i, (said, gold) in enumerate(ANSWERS):
        scores, _ = score_response(task, Instance(id=f"q{i}", query="?", gold=gold), GenerateResponse(text=said))
        out.append(InstanceRecord(task_hash="h", task_spec="toy", instance_id=f"q{i}", scores=scores))
    return out


# -- @metric ------------------------------------------------------------------------------------
def test_each_instance_gets_the_metrics_own_value():
    first = _records()[1].scores  # "the city of rome" vs "rome": tp 1, fp 3, fn 0
    assert (first["tp"], first["fp"], first["fn"]) == (1, 3, 0)
    assert first["t_f1"] == pytest.approx(2 / 5) and first["t_micro_f1"] == pytest.approx(2 / 5)


def test_a_per_instance_metric_is_a_mean_with_the_analytic_error_bars():
    records = _records()
    got = aggregate_scores(records)["t_f1"]
    assert got == summarize([r.scores["t_f1"] for r in records]) and got.stderr_method is None


def test_a_corpus_metric_is_computed_over_all_questions_with_a_bootstrap_se():
    records = _records()
    got = aggregate_scores(records)["t_micro_f1"]
    tp, fp, fn = (sum(r.scores[k] for r in records) for k in ("tp", "fp", "fn"))
    assert got.value == pytest.approx(2 * tp / (2 * tp + fp + fn))  # not the mean of per-question F1
    assert got.value != pytest.approx(aggregate_scores(records)["t_f1"].value)
    assert got.stderr_method == "bootstrap" and got.n == len(ANSWERS) and 0 < got.stderr < 1
    assert got.ci_low == pytest.approx(got.value - Z_95 * got.stderr) and got.mde == pytest.approx(3.9612 * got.stderr,
                                                                                                    rel=1e-3)
    assert aggregate_scores(records)["t_micro_f1"] == got  # seeded: the same SE every time


def test_the_bootstrap_se_of_a_mean_matches_the_analytic_one():
    @metric(name="t_mean_tp", inputs=["tp"])
    def mean_tp(rows: list[dict[str, float]]) -> float:
        return sum(r["tp"] for r in rows) / len(rows)

    values = [float(i % 3) for i in range(200)]
    records = [InstanceRecord(task_hash="h", task_spec="x", instance_id=f"{i:03}", scores={"tp": v, "t_mean_tp": v})
               for i, v in enumerate(values)]
    boot, analytic = aggregate_scores(records)["t_mean_tp"], summarize(values)
    assert boot.value == pytest.approx(analytic.value) and math.isclose(boot.stderr, analytic.stderr, rel_tol=0.1)


def test_metric_names_are_checked_with_suggestions():
    with pytest.raises(ValidationError, match=r"Unknown metric 't_micro_f' in `task.metrics`. Did you mean 't_micro_f1'"
                                              r".*`@metric`.*imports:"):
        TaskConfig.model_validate({**TASK, "metrics": ["t_micro_f"]})
    with pytest.raises(ValidationError, match=r"reads the per-instance score\(s\) fn, fp, tp.*add the scorer"):
        TaskConfig.model_validate({**TASK, "scorers": [], "primary_metric": "exact_match"})
    with pytest.raises(ConfigError, match=r"name of a score the engine writes itself"):
        metric(lambda rows: 0.0, name="acc")


# -- per-task variants ----------------------------------------------------------------------------
@pytest.fixture
def user_variant(tmp_path, monkeypatch):
    """A user folder with arc_easy's own `3shot` (the global 3shot stays for every other task)."""
    (tmp_path / "variant" / "arc_easy").mkdir(parents=True)
    (tmp_path / "variant" / "arc_easy" / "3shot.yaml").write_text("# @package task\nnum_fewshot: 2\nfewshot:\n  seed: 7\n")
    monkeypatch.setenv("EVALBENCH_CONFIG_PATH", str(tmp_path))
    set_cli_searchpath([])
    return tmp_path


def test_a_tasks_own_variant_wins_over_the_global_one(user_variant):
    own, other = compose_task("arc_easy:3shot"), compose_task("arc_challenge:3shot")
    assert (own.prompt.num_fewshot, own.prompt.fewshot.seed, own.variants) == (2, 7, ["3shot"])
    assert (other.prompt.num_fewshot, other.prompt.fewshot.seed) == (3, 1234)
    assert prepare(["task=arc_easy:3shot:rc"]).strings() == ["task=arc_easy", "variant=[arc_easy/3shot,rc]"]
    assert prepare(["task=arc_easy", "variant=3shot"]).strings() == ["task=arc_easy", "variant=arc_easy/3shot"]
    exp = compose_experiment(["task=arc_easy", "variant=[3shot]", "tracking=none"])
    assert exp.task is not None and (exp.task.prompt.num_fewshot, exp.task.variants) == (2, ["3shot"])
    with pytest.raises(ConfigError, match=r"per-task variant of some of the swept tasks.*one sweep per task"):
        prepare(["task=arc_easy,arc_challenge", "variant=3shot"])


def test_a_variant_registered_from_python(user_variant, capsys):
    cfg = compose_task("arc_easy:t_seed9")
    assert (cfg.prompt.num_fewshot, cfg.prompt.fewshot.seed) == (1, 9)
    with pytest.raises(ConfigError, match=r"Unknown variant 't_seed9' for task 'arc_challenge'"):
        parse_task_spec("arc_challenge:t_seed9")
    with pytest.raises(ConfigError, match=r"Unknown variant 't_seed' for task 'arc_easy'. Did you mean 't_seed9'.*"
                                          r"task 'arc_easy' has its own: 3shot, t_seed9.*register_variant"):
        parse_task_spec("arc_easy:t_seed")
    assert engine_list.main(["variant"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.split()[:2] == ["arc_easy:3shot", str(user_variant)] for ln in lines)
    assert any(ln.split()[0] == "arc_easy:t_seed9" and "register_variant" in ln for ln in lines)


def test_a_refused_metric_name_is_not_registered():
    """`@metric(name="acc")` is refused (the engine writes `acc`): the refusal must leave the registry as it
    was, or every later run in the process would aggregate `acc` with the refused function (it read 0.0)."""
    with pytest.raises(ConfigError):
        metric(lambda rows: 0.0, name="acc")
    assert "acc" not in METRICS
