"""The public Python API and the `evalbench` console script (docs/architecture.md, "The public API").

- `import engine` is cheap: the public names load on first use, and `from engine import *` gives them;
- `evaluate(...)` runs through the command line's own path: a run made in Python is answered from
  the cache by the same command typed at the shell, with the same scores, the same task hash and
  the same MLflow store; task names, a task config object, a suite and an external task all run;
- `compare(a, b)` returns what `python -m engine.compare A B --format json` prints;
- `evalbench` is `python -m engine`: same output, same exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.errors import ConfigError
from tests.external.conftest import FAKE

REPO = Path(__file__).resolve().parents[1]
EVALBENCH = Path(sys.executable).parent / "evalbench"


def _python(code: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def test_import_engine_loads_no_engine_module_until_a_public_name_is_used(tmp_path: Path) -> None:
    code = ("import sys, engine; before = sorted(m for m in sys.modules if m.startswith('engine.'));"
            "from engine import *; import json;"
            "print(json.dumps([before, sorted(engine.__all__), callable(compare), evaluate.__module__]))")
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    before, names, compare_callable, evaluate_home = json.loads(done.stdout)
    assert before == ["engine.environment"]
    assert {"evaluate", "compare", "Experiment", "RunRecord"} <= set(names)
    assert compare_callable and evaluate_home == "engine.public"


def test_bad_names_raise_the_clis_config_error() -> None:
    from engine import experiment

    with pytest.raises(ConfigError, match="mmlx"):
        experiment("mmlx")
    with pytest.raises(ConfigError, match="no task"):
        experiment([])
    exp = experiment("mmlu:mc", model="smollm2", limit=3, seed=7, overrides=["model.batch_size=2"])
    assert (exp.task.name, exp.task.variants, exp.limit, exp.seed, exp.model.batch_size) == ("mmlu", ["mc"], 3, 7, 2)


def test_a_task_config_object_replaces_the_task_and_is_validated() -> None:
    from engine import experiment

    base = experiment("mmlu:mc")
    exp = experiment(base.task.model_copy(update={"name": "mmlu_copy"}), harness="default")
    assert exp.task.name == "mmlu_copy" and exp.task.formulation == base.task.formulation
    with pytest.raises(ConfigError, match="formulation"):
        experiment({"name": "broken", "formulation": "nope"})
    with pytest.raises(ConfigError, match="harness"):  # the cross-group check a composed experiment passes
        experiment(base.task, harness="search_agent")


def test_unknown_attribute_and_unknown_setting_are_clear() -> None:
    import engine

    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        engine.evaluat  # noqa: B018 - the attribute access is the test
    with pytest.raises(ConfigError):
        engine.experiment("mmlu:mc", limti=3)


SCRIPT = """
import json, sys
from engine import evaluate
common = dict(output_dir=sys.argv[1], overrides=[f"tracking.tracking_uri=sqlite:///{sys.argv[2]}",
                                                  f"cache.path={sys.argv[3]}", "progress=false"])
out = {}
out["names"] = [r.model_dump(mode="json") for r in evaluate("mmlu:mc", limit=3, **common)]
task = json.loads(sys.argv[4])
out["object"] = [r.model_dump(mode="json") for r in evaluate(task, limit=3, **{**common, "output_dir": sys.argv[1] + "-obj"})]
out["suite"] = [r.model_dump(mode="json") for r in evaluate(["mmlu:mc", "hellaswag:rc"], limit=2,
                                                            **{**common, "output_dir": sys.argv[1] + "-suite"})]
out["external"] = [r.model_dump(mode="json") for r in evaluate("lm_eval_hellaswag", limit=3,
                                                               **{**common, "output_dir": sys.argv[1] + "-ext"})]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow  # the real SmolLM2, in subprocesses
def test_evaluate_runs_names_objects_suites_and_external_tasks_as_the_cli_does(tmp_path: Path) -> None:
    rows = [{"question": f"What is {a} plus {b}?", "answer_a": str(a + b), "answer_b": str(a + b + 1),
             "answer_c": str(a * b + 7), "answer_d": str(a + b + 3), "correct_answer": "A", "topic": "arith"}
            for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from engine import experiment

    mmlu = experiment("mmlu:mc").task.model_dump(mode="json", by_alias=True)
    task = {**mmlu, "name": "arith", "data": {**mmlu["data"], "path": "json", "data_files": str(data), "exclude": {}}}
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE.replace("{python}", sys.executable))
    fake.chmod(0o755)
    runs, store, cache = tmp_path / "runs", tmp_path / "mlruns.db", tmp_path / "cache.sqlite"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(runs), str(store), str(cache), json.dumps(task)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "EVALBENCH_LM_EVAL_PYTHON": str(fake), "FAKE_LM_EVAL": "samples"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT ", 1)[1])

    (names,) = out["names"]
    assert names["status"] == "finished" and names["counts"]["n"] == 3 and names["mlflow_run_id"]
    (obj,) = out["object"]
    assert obj["task_spec"].startswith("arith") and obj["counts"]["n"] == 3 and obj["counts"]["errored"] == 0
    assert [r["task_spec"] for r in out["suite"]] == ["mmlu:mc", "hellaswag:rc"]
    assert (tmp_path / "runs-suite").is_dir()
    (ext,) = out["external"]
    assert ext["status"] == "finished" and ext["config"]["external_run"]["wrapper"] == "lm_eval"

    # The same run typed at the shell: every answer from the cache, the same numbers, the same store.
    cli = subprocess.run([sys.executable, "-m", "engine", "task=mmlu:mc", "limit=3", f"output_dir={runs}-cli",
                          f"tracking.tracking_uri=sqlite:///{store}", f"cache.path={cache}", "progress=false"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert cli.returncode == 0, cli.stderr[-3000:]
    record = json.loads(next((tmp_path / "runs-cli").rglob("experiment.json")).read_text())
    assert record["task_hash"] == names["task_hash"] and record["experiment_id"] == names["experiment_id"]
    assert record["scores"] == names["scores"] and record["counts"] == names["counts"]
    cached = [json.loads(line)["cached"] for line in (Path(record["run_dir"]) if "run_dir" in record else
              next((tmp_path / "runs-cli").rglob("experiment.json")).parent).joinpath("instances.jsonl").open()]
    assert cached == [True] * 3

    # compare(a, b) is what the CLI prints as JSON.
    from engine import compare

    a, b = next(runs.rglob("experiment.json")).parent, next((tmp_path / "runs-cli").rglob("experiment.json")).parent
    report = compare(a, b)
    shown = subprocess.run([sys.executable, "-m", "engine.compare", str(a), str(b), "--format", "json"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)
    ours = json.loads(report.model_dump_json())  # as JSON: a missing number (NaN) is null on both sides
    for shown_report in (ours, printed):
        shown_report.pop("timings_s")
    assert ours == printed
    assert [t.stats.delta for t in report.tasks] == [0.0] and report.tasks[0].alignment.n_paired == 3


def test_evalbench_console_script_is_python_m_engine(tmp_path: Path) -> None:
    assert EVALBENCH.exists(), "the console script is installed by `pip install -e .` (scripts/install.sh)"
    for args in (["task=mmlx"], ["task=mmlu:mc", "limit=2", "inspect=true", "tracking.mlflow=false"]):
        ours = subprocess.run([str(EVALBENCH), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        theirs = subprocess.run([sys.executable, "-m", "engine", *args], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        assert ours.returncode == theirs.returncode and ours.stdout == theirs.stdout
        assert ours.stderr == theirs.stderr
    assert ours.returncode == 0 and "mmlu" in ours.stdout


def readme_python_block(heading: str = "## Python API") -> str:
    section = (REPO / "README.md").read_text().split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow  # two real SmolLM2 runs
def test_the_readmes_python_block_runs_as_written(tmp_path: Path) -> None:
    done = _python(readme_python_block(), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    verdict, delta = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert -1.0 <= float(delta) <= 1.0 and verdict
    for side in ("base", "bf16"):
        (record,) = (tmp_path / "runs" / "py" / side).rglob("experiment.json")
        assert json.loads(record.read_text())["counts"]["n"] == 20
    assert (tmp_path / "mlruns.db").exists()  # recorded as the CLI records: the default SQLite store
