"""The user's config folders add to the built-in groups (docs/architecture.md, "Paths").

A folder outside the repository holds one task (with its JSONL data beside it), one suite and one
harness; `python -m engine` finds it through EVALBENCH_CONFIG_PATH, through `hydra.searchpath` on
the command line, and through an `evalbench.yaml` discovered from the working directory upward.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import compose
from engine.config.compose import compose_experiment, compose_task, entries, known_names
from engine.config.errors import ConfigError
from engine.config.paths import config_sources, set_cli_searchpath
from engine.config.suites import expand_experiment, load_suite
from tests.conftest import run_engine

ROWS = [{"id": f"cap-{i}", "question": f"What is the capital of {c}?", "answer": a}
        for i, (c, a) in enumerate([("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Peru", "Lima"),
                                    ("Kenya", "Nairobi")])]
TASK = """\
# Capitals: a user's task whose data lies beside it.
name: capitals
data:
  path: json
  data_files: capitals.jsonl
  split: train
fields:
  id: id
  query: "{question}"
  gold: answer
formulation: generate
generate_template: "{query}\\nAnswer with one word."
extract: first_line
scorers: [contains]
primary_metric: contains
generation:
  max_tokens: 8
  temperature: 0.0
  stop: ["<|im_end|>"]
"""
SUITE = "# The user's own suite.\nname: my_suite\ntasks: [capitals, freshqa:zero]\naggregate: mean\n"
HARNESS = """\
# A search agent over the user's own corpus.
name: my_agent
scaffold: tool_loop
tools: [search, submit]
max_turns: 2
tool_options:
  search: {backend: local, corpus: corpus, k: 2}
"""


@pytest.fixture
def evals(tmp_path: Path) -> Path:
    """A user config folder outside the repository."""
    root = tmp_path / "my_evals"
    for group in ("task", "suite", "harness/corpus"):
        (root / group).mkdir(parents=True)
    (root / "task" / "capitals.yaml").write_text(TASK)
    (root / "task" / "capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (root / "suite" / "my_suite.yaml").write_text(SUITE)
    (root / "harness" / "my_agent.yaml").write_text(HARNESS)
    (root / "harness" / "corpus" / "paris.md").write_text("# Paris\nParis is the capital of France.\n")
    return root


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _no_cli_searchpath():
    set_cli_searchpath([])
    yield
    set_cli_searchpath([])


def _inspect(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    return run_engine([*args, "inspect=true", "limit=1", "tracking=none"], cwd, timeout=300, env=env)


def test_a_user_task_runs_through_evalbench_config_path(evals, work):
    res = _inspect(["task=capitals"], work, {"EVALBENCH_CONFIG_PATH": str(evals)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("=== capitals ") and "Answer with one word." in res.stdout
    assert any(f"What is the capital of {c}?" in res.stdout for c in ("France", "Italy", "Japan", "Peru", "Kenya"))


def test_a_user_suite_runs_through_hydra_searchpath(evals, work):
    res = _inspect([f"hydra.searchpath=[file://{evals}]", "suite=my_suite"], work)
    assert res.returncode == 0, res.stderr[-2000:]
    headers = [ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("=== ")]
    assert headers == ["capitals", "freshqa:zero"]


def test_a_discovered_evalbench_yaml_names_the_folder(evals, work):
    (work / "evalbench.yaml").write_text(f"config_path: [{Path('..') / evals.name}]\n")
    deeper = work / "sub" / "deeper"
    deeper.mkdir(parents=True)
    res = _inspect(["task=capitals:3shot"], deeper)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("=== capitals:3shot ") and "3-shot" in res.stdout.splitlines()[0]


def test_a_discovered_dot_evalbench_folder(evals, work, monkeypatch):
    (work / ".evalbench").symlink_to(evals, target_is_directory=True)
    monkeypatch.chdir(work)
    assert [s.via for s in config_sources()] == [".evalbench", "builtin"]
    assert compose_task("capitals").name == "capitals"


def test_data_beside_the_task_file_wins_over_the_working_directory(evals, work, monkeypatch):
    (work / "capitals.jsonl").write_text('{"id": "decoy", "question": "Decoy?", "answer": "x"}\n')
    monkeypatch.setenv("EVALBENCH_CONFIG_PATH", str(evals))
    monkeypatch.chdir(work)
    assert compose_task("capitals").data.data_files == str(evals / "task" / "capitals.jsonl")
    exp = compose_experiment(["task=capitals", "harness=my_agent"])
    assert exp.harness.tool_options["search"]["corpus"] == str(evals / "harness" / "corpus")
    # typed on the command line, a path is the user's: from the working directory
    exp = compose_experiment(["task=capitals", "task.data.data_files=capitals.jsonl"])
    assert exp.task is not None and exp.task.data.data_files == "capitals.jsonl"


def test_every_lookup_sees_the_user_folder(evals, monkeypatch):
    monkeypatch.setenv("EVALBENCH_CONFIG_PATH", str(evals))
    assert "capitals" in known_names("task") and "mmlu" in known_names("task")
    assert entries("task")["capitals"].origin == str(evals) and entries("task")["mmlu"].builtin
    assert load_suite("my_suite").tasks == ["capitals", "freshqa:zero"]
    exp = compose_experiment(["suite=my_suite"])
    assert [r.spec for r in expand_experiment(exp)] == ["capitals", "freshqa:zero"]
    with pytest.raises(ConfigError, match="Did you mean 'capitals'"):
        compose_experiment(["task=capitls"])


def test_listing_shows_each_entry_origin(evals, work):
    out = subprocess.run([sys.executable, "-m", "engine.list", "task", "suite", "harness"], cwd=work, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "EVALBENCH_CONFIG_PATH": str(evals)})
    assert out.returncode == 0, out.stderr
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln.startswith("  ")}
    assert str(evals) in lines["capitals"] and "Capitals: a user's task" in lines["capitals"]
    assert str(evals) in lines["my_suite"] and str(evals) in lines["my_agent"]
    assert "builtin" in lines["mmlu"] and "builtin" in lines["search_agent"]


def test_a_user_task_overrides_a_builtin_with_a_notice(evals, work):
    (evals / "task" / "freshqa.yaml").write_text(TASK.replace("name: capitals", "name: freshqa"))
    (evals / "task" / "capitals.jsonl").rename(evals / "task" / "freshqa_rows.jsonl")
    (evals / "task" / "freshqa.yaml").write_text((evals / "task" / "freshqa.yaml").read_text()
                                                 .replace("capitals.jsonl", "freshqa_rows.jsonl"))
    res = _inspect(["task=freshqa"], work, {"EVALBENCH_CONFIG_PATH": str(evals)})
    assert res.returncode == 0, res.stderr[-2000:]
    notices = [ln for ln in res.stderr.splitlines() if ln.startswith("notice:")]
    assert notices == [f"notice: task 'freshqa' is {evals / 'task' / 'freshqa.yaml'}, which overrides the built-in one."]
    assert "Answer with one word." in res.stdout and "What is the capital of" in res.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["task=capitls"], "Unknown task 'capitls'. Did you mean 'capitals'"),
    (["suite=my_suit"], "Unknown suite 'my_suit'. Did you mean 'my_suite'"),
    (["task=capitls:zero"], "Unknown task 'capitls'. Did you mean 'capitals'"),
])
def test_unknown_names_exit_2_with_user_suggestions(evals, work, args, expected):
    res = _inspect(args, work, {"EVALBENCH_CONFIG_PATH": str(evals)})
    assert res.returncode == 2 and expected in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_a_missing_user_folder_is_a_clear_error(work, tmp_path):
    res = _inspect(["task=mmlu"], work, {"EVALBENCH_CONFIG_PATH": str(tmp_path / "nope")})
    assert res.returncode == 2 and "does not exist" in res.stderr and "EVALBENCH_CONFIG_PATH" in res.stderr


def test_task_fields_are_overridable_without_plus(work):
    """freshqa's YAML sets neither num_fewshot nor fewshot.seed: the task defaults hold every key."""
    res = _inspect(["task=freshqa", "task.num_fewshot=2", "task.fewshot.seed=7"], work)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.splitlines()[0].startswith("=== freshqa ") and "2-shot" in res.stdout.splitlines()[0]
    exp = compose_experiment(["task=freshqa", "task.system_prompt=Be brief."])
    assert exp.task is not None and exp.task.prompt.system_prompt == "Be brief." and exp.task.prompt.num_fewshot == 0
    # a suite alone (`~task`) leaves only the defaults, which are no task
    exp = compose_experiment(["~task", "suite=offline"])
    assert exp.task is None and exp.suite is not None


def test_the_task_defaults_change_no_task():
    """Merged beneath every task, the defaults are pydantic's own: each built-in task validates the same."""
    assert compose.task_defaults()["task"]["num_fewshot"] == 0
    for name in known_names("task"):
        assert compose_task(name).model_dump() == compose.TaskConfig.model_validate(
            {**_file_task(name), "variants": []}).model_dump(), name


def _file_task(name: str) -> dict:
    from omegaconf import OmegaConf

    raw = OmegaConf.load(entries("task")[name].path)
    parents = [p for p in raw.pop("defaults", []) if p != "_self_"]  # a task file extending others
    merged = OmegaConf.merge(*[OmegaConf.create(_file_task(p)) for p in parents], raw) if parents else raw
    data = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(data, dict)
    return data


def test_a_task_list_runs_as_an_adhoc_suite(work):
    res = _inspect(["task=[mmlu:rc,gsm8k:3shot]"], work)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("=== ")] == ["mmlu:rc", "gsm8k:3shot"]
    exp = compose_experiment(["task=[mmlu,gsm8k]", "variant=3shot"])
    assert exp.task is None and exp.suite is not None and exp.suite.tasks == ["mmlu:3shot", "gsm8k:3shot"]
    with pytest.raises(ConfigError, match="task list"):
        compose_experiment(["task=[mmlu,gsm8k]", "task.num_fewshot=2"])


@pytest.mark.slow
def test_a_user_task_records_its_instances(evals, work):
    """A real run of the user's task on the embedded model: its own rows end up in the records."""
    res = run_engine(["task=capitals", "limit=2", "tracking=none", "output_dir=out"], work,
                     env={"EVALBENCH_CONFIG_PATH": str(evals)})
    assert res.returncode in (0, 3), res.stderr[-3000:]
    records = [json.loads(ln) for ln in next((work / "out").rglob("instances.jsonl")).read_text().splitlines()]
    assert len(records) == 2 and {r["instance_id"] for r in records} <= {row["id"] for row in ROWS}
