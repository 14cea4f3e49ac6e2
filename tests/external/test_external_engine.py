"""External evals through the whole CLI (docs/architecture.md, "External evals"), with the stand-in
for lm-eval of test_external_run.py and the FakeProvider swapped in for the model (no weights load):

- an external run whose engine is SIGKILLed halfway resumes: the answers the benchmark got are in the
  response cache, and the re-run serves them from it, calls the model only for the rest, and records
  every instance;
- a suite mixing a native task and an external one runs in one invocation: both records, the suite
  score, exit 0;
- `python -m engine.list` marks external evals with their wrapper.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine import list as engine_list
from engine.runner.cache import SCHEMA

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# `python -m engine` as users run it (engine.cli.main), with one change: the model is the FakeProvider.
ENGINE = f"""import sys
sys.path.insert(0, {str(HERE)!r})
from conftest import FakeProvider
import engine.runner.experiment
engine.runner.experiment.build_provider = lambda cfg: FakeProvider()
from engine.cli import main
main()
"""


def _engine(args: list[str], cwd: Path, fake_lm_eval: Path, mode: str,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = cwd / "engine_with_fake_model.py"
    script.write_text(ENGINE)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "EVALBENCH_LM_EVAL_PYTHON": str(fake_lm_eval), "FAKE_LM_EVAL": mode, **(env or {})}
    return subprocess.run([sys.executable, str(script), *args, "tracking.mlflow=false", "progress=false",
                           f"output_dir={cwd / 'runs'}", f"cache.path={cwd / 'cache.sqlite'}"],
                          capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)


def _cache_rows(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute(f"SELECT COUNT(*) FROM {SCHEMA}").fetchone()[0])


@pytest.mark.slow  # engine subprocesses
def test_an_external_run_killed_halfway_resumes_from_the_cache(tmp_path, fake_lm_eval) -> None:
    n, k = 5, 3  # the benchmark asks 2 requests per instance; the engine dies once k instances are answered
    args = ["task=lm_eval_hellaswag", f"limit={n}"]
    killed = _engine(args, tmp_path, fake_lm_eval, f"kill-engine-after:{k}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "runs" / "lm_eval_hellaswag" / "experiment.json").exists()  # no record: it died
    # Exactly the answers the benchmark got: the core queues the cache row (`put_soon`) before it resolves
    # the request, so the group commit runs before the gateway writes the HTTP answer.
    assert _cache_rows(tmp_path / "cache.sqlite") == 2 * k

    again = _engine(args, tmp_path, fake_lm_eval, "samples")
    assert again.returncode == 0, again.stderr[-2000:]
    run_dir = tmp_path / "runs" / "lm_eval_hellaswag"
    log = [json.loads(line) for line in (run_dir / "gateway.jsonl").read_text().splitlines()]
    # The first k instances' requests come from the cache; the model is asked only for the rest.
    assert [e["cached"] for e in log] == [True] * (2 * k) + [False] * (2 * (n - k))
    record = json.loads((run_dir / "experiment.json").read_text())
    assert record["status"] == "finished" and record["counts"]["n"] == n and record["counts"]["errored"] == 0
    ext = record["config"]["external_run"]
    assert ext["cached_requests"] == 2 * k and ext["gateway_requests"] == 2 * n and ext["unmatched_requests"] == 0
    instances = [json.loads(line) for line in (run_dir / "instances.jsonl").read_text().splitlines()]
    assert [r["cached"] for r in instances] == [True] * k + [False] * (n - k)
    assert _cache_rows(tmp_path / "cache.sqlite") == 2 * n


@pytest.mark.slow  # an engine subprocess
def test_a_suite_mixing_a_native_and_an_external_task_runs_in_one_invocation(tmp_path, fake_lm_eval) -> None:
    evals = tmp_path / "evals"
    (evals / "suite").mkdir(parents=True)
    (evals / "suite" / "mixed.yaml").write_text(
        "name: mixed\ntasks:\n  - hellaswag:rc\n  - lm_eval_hellaswag\naggregate: mean\n")
    done = _engine(["suite=mixed", "limit=4"], tmp_path, fake_lm_eval, "samples",
                   {"EVALBENCH_CONFIG_PATH": str(evals)})
    assert done.returncode == 0, done.stderr[-2000:]
    runs = tmp_path / "runs"
    native = json.loads((runs / "hellaswag__rc" / "experiment.json").read_text())
    external = json.loads((runs / "lm_eval_hellaswag" / "experiment.json").read_text())
    for record in (native, external):
        assert record["status"] == "finished" and record["counts"]["n"] == 4 and record["suite"] == "mixed"
    assert "external_run" not in native["config"] and external["config"]["external_run"]["wrapper"] == "lm_eval"
    assert native["task_hash"] == external["task_hash"]  # `compare_as: hellaswag:rc`
    aggregate = json.loads((runs / "suite.json").read_text())["aggregate"]
    # The suite score is the mean of the two task scores, with nothing missing.
    assert [p["name"] for p in aggregate["parts"]] == ["hellaswag:rc", "lm_eval_hellaswag"]
    assert aggregate["missing"] == [] and aggregate["n"] == 8
    mean = (native["scores"]["acc"]["value"] + external["scores"]["acc"]["value"]) / 2
    assert aggregate["value"] == pytest.approx(mean)
    assert "mixed" in done.stdout and "lm_eval_hellaswag" in done.stdout  # the table and the suite row

def test_engine_list_marks_external_evals_with_their_wrapper(capsys) -> None:
    assert engine_list.main(["task"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")}
    assert "[external: lm_eval]" in lines["lm_eval_hellaswag"]
    assert "[external: inspect]" in lines["inspect_mmlu"]
    assert "[external:" not in lines["hellaswag"] and "[external:" not in lines["mmlu"]


# -- the benchmark's output is checked against the questions sent (docs/architecture.md, "Boundaries") --
@pytest.mark.slow  # engine subprocesses
@pytest.mark.parametrize(("mode", "code", "needles"), [
    ("duplicate", 1, ["more than one sample", "(2 times)"]),
    ("foreign-ids", 1, ["instance ids the engine did not send", "'other-"]),
    ("nan", 1, ["score 'acc' = nan, not a finite number"]),
    ("score-5", 1, ["score 'acc' = 5.0, outside its range [0, 1]"]),
    ("aggregate-nan", 1, ["the benchmark's aggregate has score 'acc' = nan"]),
])
def test_a_defective_benchmark_output_fails_the_run_naming_the_defect(tmp_path, fake_lm_eval, mode, code, needles) -> None:
    done = _engine(["task=lm_eval_hellaswag", "limit=5"], tmp_path, fake_lm_eval, mode)
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    record = json.loads((tmp_path / "runs" / "lm_eval_hellaswag" / "experiment.json").read_text())
    assert record["status"] == "failed" and record["scores"] == {}
    error = record["config"]["external_run"]["error"]
    for needle in needles:
        assert needle in error and needle in done.stderr, (needle, error)


@pytest.mark.slow  # an engine subprocess
def test_questions_the_benchmark_did_not_answer_are_errored_instances(tmp_path, fake_lm_eval) -> None:
    done = _engine(["task=lm_eval_hellaswag", "limit=5"], tmp_path, fake_lm_eval, "missing-2")
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    run_dir = tmp_path / "runs" / "lm_eval_hellaswag"
    record = json.loads((run_dir / "experiment.json").read_text())
    assert record["status"] == "partial"
    assert record["counts"] == {**record["counts"], "n": 5, "scored": 3, "errored": 2}
    assert record["scores"]["acc"]["n"] == 3  # the score is over the answered questions only
    instances = [json.loads(line) for line in (run_dir / "instances.jsonl").read_text().splitlines()]
    kinds = [(r["error"] or {}).get("kind") for r in instances]
    assert kinds == [None, None, None, "missing_from_output", "missing_from_output"]
