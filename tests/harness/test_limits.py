"""Harness limits end a trajectory without an answer: an error of the limit's kind, never a score.

Through the command's own reporting (`engine.outcome.run_and_report`) with a scripted model (a test
double: what is tested is our tool loop, the record and the exit code): a model that never answers
under max_turns / max_total_tokens / max_time gives errored instances of kind `max_turns` /
`max_tokens` / `max_time`, shown apart and reflected in the exit code (1: nothing scored; 3: some
errored); one that answers before the limit is scored (docs/architecture.md, "Harness limits").
"""

from __future__ import annotations

import json

import pytest

from engine.config.compose import compose_task
from engine.config.schema import Experiment, HarnessConfig, ModelConfig, TrackingConfig
from engine.outcome import EXIT_FAILED, EXIT_PARTIAL, run_and_report
from tests.harness.test_tool_loop import CORPUS, ScriptedModel, call

LIMITS = {"max_turns": {"max_turns": 3}, "max_tokens": {"max_total_tokens": 30}, "max_time": {"max_time_s": 0.5}}


def _exp(tmp_path, **limits) -> Experiment:
    h = HarnessConfig(name="search_agent", scaffold="tool_loop", tools=["search", "fetch_page", "submit"],
                      tool_options=CORPUS, retry_backoff_s=0.0, **{"max_turns": 20, **limits})
    return Experiment(model=ModelConfig(name="scripted"), harness=h, tracking=TrackingConfig(mlflow=False),
                      output_dir=str(tmp_path / "run"), progress=False, task=compose_task("ellisande_qa"), limit=4,
                      cache={"path": str(tmp_path / "cache.sqlite")})


def _report(tmp_path, monkeypatch, model, capsys, **limits):
    """(exit code, run record as written, instance records as written, stdout) of one run."""
    import engine.runner.experiment as experiment

    monkeypatch.setattr(experiment, "build_provider", lambda cfg: model)
    code = 0
    try:
        run_and_report(_exp(tmp_path, **limits))
    except SystemExit as stop:
        code = int(stop.code or 0)
    folder = tmp_path / "run" / "ellisande_qa"
    record = json.loads((folder / "experiment.json").read_text())
    instances = [json.loads(line) for line in (folder / "instances.jsonl").read_text().splitlines()]
    return code, record, instances, capsys.readouterr().out


def _never_answers(req):
    return call("search", query="Brithemport")


def _answers_on_the_third_question(req):
    """Question 'employ...' submits after one search; the others never answer."""
    user = next(m.content for m in req.messages if m.role == "user")
    turns = sum(1 for m in req.messages if m.role == "assistant")
    if "employ" in user and turns >= 1:
        return call("submit", answer="x")
    return call("search", query=user)


@pytest.mark.parametrize("kind", list(LIMITS))
def test_a_limit_without_an_answer_is_an_error_of_its_kind(tmp_path, monkeypatch, capsys, kind):
    model = ScriptedModel([_never_answers], delay=0.2 if kind == "max_time" else 0.0)
    code, record, instances, out = _report(tmp_path, monkeypatch, model, capsys, **LIMITS[kind])
    assert code == EXIT_FAILED  # no instance scored: the run failed, it did not score 0
    assert record["status"] == "failed" and record["counts"] == {"n": 4, "scored": 0, "errored": 4}
    assert record["scores"] == {}
    for inst in instances:
        assert inst["error"]["kind"] == kind and "without an answer" in inst["error"]["message"]
        assert inst["scores"] == {} and inst["output_text"] is None
        assert inst["trajectory"][-1]["type"] == "limit" and inst["trajectory"][-1]["content"]["end_reason"] == kind
    assert record["agent"]["end_reasons"] == {kind: 4}  # the agent report still tallies how they ended
    assert f"ended: {kind} 4" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("ellisande_qa "))
    assert row[-3:-1] == ["4", "FAILED"]  # errors 4, the run failed


def test_answered_trajectories_are_scored_and_cut_ones_are_errors(tmp_path, monkeypatch, capsys):
    model = ScriptedModel([_answers_on_the_third_question])
    code, record, instances, out = _report(tmp_path, monkeypatch, model, capsys, max_turns=3)
    answered = [i for i in instances if i["error"] is None]
    assert code == EXIT_PARTIAL and record["status"] == "partial"
    assert record["counts"] == {"n": 4, "scored": 1, "errored": 3} and len(answered) == 1
    assert answered[0]["output_text"] == "x" and answered[0]["scores"]
    primary = record["primary_metric"]
    assert record["scores"][primary]["n"] == 1  # the score is over the answered question only
    assert record["agent"]["end_reasons"] == {"answered": 1, "max_turns": 3}
    row = next(line.split() for line in out.splitlines() if line.startswith("ellisande_qa "))
    assert row[3] == "1" and row[-2] == "3"  # n scored 1, errors 3: shown apart in the results table
    # Errors are never cached: the re-run runs the cut trajectories again and scores the cached answer.
    model.requests.clear()
    code2, record2, _, _ = _report(tmp_path, monkeypatch, model, capsys, max_turns=3)
    assert code2 == EXIT_PARTIAL and record2["counts"] == record["counts"]
    assert len(model.requests) == 3 * 3  # three cut trajectories, three turns each; the answer was cached
