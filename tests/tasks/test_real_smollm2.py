"""The wheel-shipped tasks for real on SmolLM2, and loglikelihood identities on real logprobs."""

from __future__ import annotations

import asyncio
import math

import pytest

from engine.config.suites import expand_experiment
from engine.scoring import score_response
from engine.scoring.suites import suite_score
from engine.tasks import build_task
from engine.tasks.olmes import split_blank
from engine.types import LoglikelihoodRequest
from tests.conftest import run_engine
from tests.tasks.conftest import FIXTURES, compose_task, on_fixture

pytestmark = pytest.mark.slow


@pytest.fixture
def provider(smollm2_provider):
    return smollm2_provider  # shared for the session (tests/conftest.py)


def test_offline_suite_runs_for_real(tmp_path):
    from engine.config.compose import _compose, experiment_from_cfg
    from engine.runner.experiment import run_experiment_async

    cfg = _compose(["suite=offline", "limit=2", "tracking=none", "progress=false", f"output_dir={tmp_path}/runs",
                    f"cache.path={tmp_path}/cache.sqlite"])
    exp = experiment_from_cfg(cfg)
    runs = expand_experiment(exp)
    assert [r.spec for r in runs] == ["gsm8k", "mmlu:olmes:mc", "mmlu:olmes:rc", "hellaswag:rc", "truthfulqa_mc1:mc"]
    records = asyncio.run(run_experiment_async(exp, runs))
    assert all(r.status == "finished" and r.counts.scored == 2 for r in records)
    by = {r.task_spec: r for r in records}
    assert set(by["hellaswag:rc"].scores) >= {"acc", "acc_none", "acc_per_char", "bpb"}
    assert "exact_match" in by["gsm8k"].scores
    agg = suite_score(exp.suite, records)
    mmlu = max(by["mmlu:olmes:mc"].scores["acc"].value, by["mmlu:olmes:rc"].scores["acc"].value)
    choice = (mmlu + by["hellaswag:rc"].scores["acc"].value + by["truthfulqa_mc1:mc"].scores["acc"].value) / 3
    assert agg.value == pytest.approx((choice + by["gsm8k"].scores["exact_match"].value) / 2)


def test_wheel_tasks_bpb_and_uncond_on_real_logprobs(provider):
    task = build_task(compose_task("mmlu:bpb"))
    inst = task.load_instances()[0]
    (resp,) = provider.loglikelihood_sync([task.build_request(inst)])
    gold = " " + inst.gold_text
    assert score_response(task, inst, resp)[0]["bpb"] == pytest.approx(-resp.logprobs[0] / (len(gold.encode()) * math.log(2)))
    rc = build_task(compose_task("truthfulqa_mc1:norm_uncond"))
    q = rc.load_instances()[0]
    req = rc.build_request(q)
    (r,) = provider.loglikelihood_sync([req])
    (u,) = provider.loglikelihood_sync([LoglikelihoodRequest(context="Answer:", continuations=req.continuations)])
    assert r.unconditional_logprobs == pytest.approx(u.logprobs, abs=1e-4)
    pmi = [a - b for a, b in zip(r.logprobs, u.logprobs, strict=True)]
    assert score_response(rc, q, r)[1] == max(range(len(pmi)), key=pmi.__getitem__)


def test_winogrande_partial_score_is_the_conditional_of_the_rest(provider):
    task = build_task(on_fixture("winogrande:0shot"))
    inst = task.load_instances()[0]
    (resp,) = provider.loglikelihood_sync([task.build_request(inst)])
    k = len(inst.choices)
    partial = [resp.logprobs[i] - resp.logprobs[k + i] for i in range(k)]
    prefix, rest = split_blank(inst.row["sentence"])
    direct = provider.loglikelihood_sync([LoglikelihoodRequest(context=prefix + o, continuations=(rest,)) for o in inst.choices])
    assert partial == pytest.approx([d.logprobs[0] for d in direct], abs=1e-3)


def test_inspect_a_hub_task_on_its_fixture_from_the_command_line(tmp_path):
    data = FIXTURES / "arc_challenge" / "test.jsonl"
    res = run_engine(["task=arc_challenge", "variant=[mc,3shot]", "task.data.path=json",
                      f"task.data.data_files={{test:{data}}}", "inspect=true", "limit=1"], tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "George wants to warm his hands quickly" in res.stdout  # curated shot 1
    assert "--- instance Mercury_" in res.stdout and "[continuation, 1 tokens] ' A'" in res.stdout


def test_olmes_core10_suite_runs_for_real_on_hub_shaped_fixtures(tmp_path):
    """The hub is unreachable here: every task of olmes_core10 reads its fixture instead (what
    `task.data.path=json task.data.data_files=...` does), and the whole suite runs on SmolLM2."""
    from engine.config.compose import _compose, experiment_from_cfg
    from engine.config.schema import DataConfig
    from engine.runner.experiment import run_experiment_async
    from tests.tasks.conftest import fixture_files

    cfg = _compose(["suite=olmes_core10", "limit=2", "tracking=none", "progress=false",
                    f"output_dir={tmp_path}/runs", f"cache.path={tmp_path}/cache.sqlite"])
    exp = experiment_from_cfg(cfg)
    runs = []
    for run in expand_experiment(exp):
        files = fixture_files(run.task.name)
        data = DataConfig(path="json", data_files=files, split=run.task.data.split)
        runs.append(run.model_copy(update={"task": run.task.model_copy(update={"data": data})}))
    assert len(runs) == 20  # ten tasks × (mc, rc): OLMES reports the better format
    records = asyncio.run(run_experiment_async(exp, runs))
    assert all(r.status == "finished" and r.counts.scored == 2 for r in records), [
        (r.task_spec, r.status, r.counts) for r in records]
    agg = suite_score(exp.suite, records)
    assert len(agg.parts) == 10 and not agg.missing
    best = [max(r.scores["acc"].value for r in records if r.task_spec.startswith(f"{name}:"))
            for name in ("arc_challenge", "arc_easy", "boolq", "csqa", "hellaswag_hub", "mmlu_hub",
                         "openbookqa", "piqa", "socialiqa", "winogrande")]
    assert agg.value == pytest.approx(sum(best) / 10)
