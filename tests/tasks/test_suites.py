"""Suites: nested expansion, OLMES best-of, aggregation (mean of tasks, mean of means, SE)."""

from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import pytest

from engine.config.errors import ConfigError
from engine.config.suites import expand_spec, load_suite, suite_specs
from engine.scoring.suites import aggregate_report, suite_score, task_score
from engine.types import ScoreSummary
from tests.tasks.conftest import compose_task


def record(spec: str, value: float, se: float, metric: str = "acc", n: int = 100):
    score = ScoreSummary(value=value, n=n, stderr=se, ci_low=value - 1.96 * se, ci_high=value + 1.96 * se, mde=3.96 * se)
    return SimpleNamespace(task_spec=spec, primary_metric=metric, scores={metric: score})


def test_nested_offline_suite_expands_to_wheel_tasks_with_best_of():
    suite = load_suite("offline")
    assert suite.suites == ["offline_choice"]
    assert suite_specs(suite) == ["gsm8k", "mmlu:olmes", "hellaswag:rc", "truthfulqa_mc1:mc"]
    runs = [r for spec in suite_specs(suite) for r in expand_spec(spec)]
    assert [r.spec for r in runs] == ["gsm8k", "mmlu:olmes:mc", "mmlu:olmes:rc", "hellaswag:rc", "truthfulqa_mc1:mc"]
    for r in runs:  # offline: every data file is shipped in a wheel
        assert str(r.task.data.data_files).startswith("wheel://")


def test_olmes_core10_and_base_qa_few_shot_compose():
    core = load_suite("olmes_core10")
    assert len(core.tasks) == 10 and all(t.endswith(":olmes") for t in core.tasks)
    for spec in core.tasks:
        cfg = compose_task(spec)
        assert cfg.best_of == ["mc", "rc"] and cfg.prompt.num_fewshot == 5 and cfg.dataset.sample_size == 1000
    few = load_suite("base_qa_few_shot")
    assert few.tasks[:2] == ["sciq:mc:3shot", "arc_challenge:mc:3shot"]
    for spec in few.tasks:
        cfg = compose_task(spec)
        assert (cfg.formulation, cfg.prompt.num_fewshot, cfg.scoring.primary_metric) == ("mc", 3, "acc"), spec


def test_suite_mean_of_means_with_se():
    recs = [record("gsm8k", 0.10, 0.03), record("mmlu:olmes:mc", 0.25, 0.02), record("mmlu:olmes:rc", 0.30, 0.01),
            record("hellaswag:rc", 0.40, 0.05), record("truthfulqa_mc1:mc", 0.20, 0.04)]
    agg = suite_score(load_suite("offline"), recs)
    choice = next(p for p in agg.parts if p.kind == "suite")
    mmlu = next(p for p in choice.parts if p.name == "mmlu:olmes")
    assert mmlu.kind == "best_of" and mmlu.chosen == "mmlu:olmes:rc" and mmlu.value == 0.30 and mmlu.stderr == 0.01
    assert choice.value == pytest.approx((0.30 + 0.40 + 0.20) / 3)
    assert choice.stderr == pytest.approx(math.sqrt(0.01**2 + 0.05**2 + 0.04**2) / 3)
    assert agg.value == pytest.approx((choice.value + 0.10) / 2)  # the nested suite counts once
    assert agg.stderr == pytest.approx(math.sqrt(choice.stderr**2 + 0.03**2) / 2)
    assert agg.ci_low == pytest.approx(agg.value - 1.959964 * agg.stderr, abs=1e-6)
    text = aggregate_report(recs, load_suite("offline"))
    assert "offline" in text and "best: mmlu:olmes:rc" in text and "mean of 2" in text


def test_missing_tasks_are_listed_not_averaged_as_zero():
    agg = suite_score(load_suite("offline_choice"), [record("hellaswag:rc", 0.4, 0.05)])
    assert agg.value == pytest.approx(0.4) and set(agg.missing) == {"mmlu:olmes", "truthfulqa_mc1:mc"}


def test_best_of_bpb_is_the_lower():
    recs = [record("x:olmes:mc", 1.2, 0.1, "bpb"), record("x:olmes:rc", 0.9, 0.1, "bpb")]
    assert task_score("x:olmes", {r.task_spec: r for r in recs}).value == 0.9
    assert aggregate_report(recs, None).startswith("x:olmes")


def test_suite_cycles_are_config_errors(tmp_path, monkeypatch):
    from engine.config import compose

    conf = tmp_path / "conf"
    shutil.copytree(compose.conf_dir(), conf)
    (conf / "suite" / "a.yaml").write_text("name: a\nsuites: [b]\n")
    (conf / "suite" / "b.yaml").write_text("name: b\nsuites: [a]\ntasks: [mmlu]\n")
    monkeypatch.setenv("EVALBENCH_CONF", str(conf))
    with pytest.raises(ConfigError, match="includes itself"):
        suite_specs(load_suite("a"))
