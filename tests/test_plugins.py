"""Extensions (docs/architecture.md, "Extensions"): `@task`, `@scorer`, `@tool`, `@scaffold` in a user's
module, loaded through `imports:` or an installed `evalbench.plugins` entry point; names checked up front."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from engine.config import names
from engine.config.errors import ConfigError
from engine.config.plugins import load_plugins
from engine.config.schema import HarnessConfig, TaskConfig
from engine.harness import SCAFFOLDS, TOOLS, ToolContext, resolve_tools
from engine.harness.tools import get_tool
from engine.scoring import SCORERS, score_response
from engine.tasks import TASKS, build_task
from engine.tasks.olmes import WinograndeTask
from engine.types import GenerateResponse, Registry
from tests.conftest import run_engine
from tests.tasks.conftest import fixture_files, on_fixture

ARC = fixture_files("arc_easy")["test"]
WINOGRANDE = fixture_files("winogrande")["validation"]

USER_MODULE = '''
from engine.extend import GenerateResponse, Task, TaskConfig, ToolLoop, scaffold, scorer, task, tool


@task
class ShoutQATask(Task):
    """The question in capitals (a task that needs code)."""

    def preprocess_row(self, row):
        row["question"] = str(row["question"]).upper()
        return row


@scorer(metrics=["says_because"])
def says_because(cfg: TaskConfig, inst, response) -> dict:
    return {"says_because": float("because" in response.text)} if isinstance(response, GenerateResponse) else {}


@tool
def my_calculator(expression: str) -> str:
    """Add two integers written as `a+b`.

    Args:
        expression: two integers joined by `+`.
    """
    a, b = expression.split("+")
    return str(int(a) + int(b))


@scaffold
class PoliteLoop(ToolLoop):
    """The tool loop under another name."""
'''


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _refused(res, *fragments: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    err = res.stderr.strip()
    assert err.startswith("error:") and err.count("\n") == 0, err
    assert "Traceback" not in res.stderr + res.stdout
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _shouted(stdout: str) -> bool:
    """The inspected prompt's question is in capitals (the user's task class ran)."""
    lines = stdout.splitlines()
    question = next((line[len("Question: "):] for line in lines if line.startswith("Question: ")), None)
    if question is None:  # a tool harness: inspect shows the agent's first request, the question as the user turn
        question = lines[lines.index("<|im_start|>user") + 1].removesuffix("<|im_end|>")
    return len(question) > 10 and question == question.upper()


def _arc(*extra: str) -> list[str]:
    return ["task=arc_easy", "task.data.path=json", f"task.data.data_files={{test: {ARC}}}", "task.num_fewshot=0",
            "inspect=true", "limit=1", "tracking=none", *extra]


# -- the registries ------------------------------------------------------------------------------
def test_config_knows_exactly_the_builtin_names_the_registries_hold():
    assert names.builtin("task") == {n for n in TASKS if TASKS.origin(n).startswith("engine.")}
    assert names.builtin("scorer") == {n for n in SCORERS if SCORERS.origin(n).startswith("engine.")}
    assert names.builtin("tool") == {n for n in TOOLS if TOOLS.origin(n).startswith("engine.")}
    assert names.builtin("scaffold") == {n for n in SCAFFOLDS if SCAFFOLDS.origin(n).startswith("engine.")} | {
        "single_turn"}


def test_a_duplicate_name_names_both_definitions_and_redefining_the_same_one_is_fine():
    reg: Registry[object] = Registry("widget", "@widget", ConfigError)

    def first() -> None: ...

    def second() -> None: ...

    reg.add("w", first)
    reg.add("w", first)  # the same definition again (a module imported twice)
    with pytest.raises(ConfigError) as err:
        reg.add("w", second)
    here = f"{__name__}:test_a_duplicate_name_names_both_definitions_and_redefining_the_same_one_is_fine.<locals>"
    assert f"{here}.first" in str(err.value) and f"{here}.second" in str(err.value)
    assert reg.get("w") is first


def test_unknown_tool_names_the_closest_ones_and_how_to_register():
    with pytest.raises(ConfigError, match=r"Unknown tool 'serch'.*Did you mean 'search'.*`@tool`.*imports:"):
        get_tool("serch")
    with pytest.raises(ValueError, match=r"Unknown scaffold 'tool_lop' in `harness.scaffold`. Did you mean 'tool_loop'"):
        HarnessConfig(scaffold="tool_lop")


def test_yaml_short_target_resolves_to_the_registered_class():
    cfg = on_fixture("winogrande").model_copy(update={"target": "winogrande"})
    task = build_task(cfg)
    assert type(task) is WinograndeTask
    inst = task.load_instances()[0]
    # partial scoring: per option `option + rest` and `option` (the generic Task would give 2 continuations)
    assert len(task.build_request(inst).continuations) == 4
    with pytest.raises(ValueError, match=r"Unknown task 'winogrand' in `task._target_`. Did you mean 'winogrande'"):
        TaskConfig.model_validate({**cfg.model_dump(by_alias=True), "_target_": "winogrand"})


def test_short_target_on_the_command_line(workdir):
    res = run_engine(["task=winogrande", "task._target_=winogrande", "task.data.path=json",
                      f"task.data.data_files={{validation: {WINOGRANDE}}}", "inspect=true", "limit=1", "tracking=none"],
                     workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("[continuation") == 4  # WinograndeTask's partial scoring


# -- a user's module: `imports:` -----------------------------------------------------------------
def test_imports_loads_a_users_task_scorer_tool_and_scaffold(tmp_path, monkeypatch):
    _write(tmp_path, "bench_ext_user.py", USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugins(["bench_ext_user"])
    assert TASKS.origin("shout_qa") == "bench_ext_user:ShoutQATask"
    assert SCAFFOLDS.origin("polite_loop") == "bench_ext_user:PoliteLoop"

    cfg = TaskConfig.model_validate({"name": "shout", "_target_": "shout_qa", "formulation": "generate",
                                     "data": {"path": "json", "data_files": {"test": ARC}},
                                     "fields": {"query": "{question}", "gold": "answerKey"},
                                     "scorers": ["says_because", "contains"], "primary_metric": "says_because"})
    task = build_task(cfg)
    inst = task.load_instances()[0]
    assert inst.query == inst.query.upper() and inst.query.startswith("WHICH")
    scores, _ = score_response(task, inst, GenerateResponse(text="A, because sunlight"))
    assert scores == {"exact_match": 0.0, "says_because": 1.0, "contains": 1.0}

    (calc,) = resolve_tools(["my_calculator"])
    result = asyncio.run(calc({"expression": "2+40"}, ToolContext()))
    assert result.ok and result.content == "42"
    assert calc.schema()["function"]["parameters"]["properties"]["expression"]["description"].startswith("two integers")
    assert HarnessConfig(scaffold="polite_loop", tools=["my_calculator"]).tools == ["my_calculator"]


def test_imports_on_the_command_line(workdir):
    _write(workdir, "bench_ext_cli.py", USER_MODULE)
    res = run_engine(_arc("imports=[bench_ext_cli]", "+task._target_=shout_qa", "+task.scorers=[says_because]",
                          "task.formulation=generate",  # a tool harness drives generations only
                          "harness.tools=[my_calculator]", "harness.scaffold=polite_loop"), workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _shouted(res.stdout)
    # without the import, each name is refused up front with how to register it
    res = run_engine(_arc("+task._target_=shout_qa"), workdir, timeout=300)
    _refused(res, "Unknown task 'shout_qa' in `task._target_`", "`@task`", "imports:", "evalbench.plugins")


def test_unknown_tool_is_refused_with_suggestions(workdir):
    res = run_engine(_arc("harness.tools=[serch]"), workdir, timeout=300)
    _refused(res, "Unknown tool 'serch' in `harness.tools`", "Did you mean 'search'", "`@tool`", "imports: [mypkg.evals]")


def test_duplicate_names_across_modules_exit_2_naming_both(workdir):
    for mod in ("dup_a", "dup_b"):
        _write(workdir, f"{mod}.py", "from engine.extend import tool\n\n\n@tool\ndef calc(x: int) -> int:\n    return x\n")
    res = run_engine(_arc("imports=[dup_a,dup_b]"), workdir, timeout=300)
    _refused(res, "Two tools are named 'calc'", "dup_a:calc", "dup_b:calc", "rename one")


def test_bad_imports_exit_2_naming_the_module(workdir):
    _refused(run_engine(_arc("imports=[no_such_bench_module]"), workdir, timeout=300),
             "`no_such_bench_module` listed under `imports:` cannot be found", "PYTHONPATH")
    _write(workdir, "broken_ext.py", "import math\n\nX = 1 / 0\n")
    err = _refused(run_engine(_arc("imports=[broken_ext]"), workdir, timeout=300),
                   "`broken_ext` listed under `imports:` failed to import: ZeroDivisionError: division by zero",
                   "broken_ext.py:3", "remove it from `imports:`")
    assert "python -c 'import broken_ext'" in err


# -- an installed package: entry point of group evalbench.plugins ----------------------------------
def _install_plugin(site: Path, module_text: str) -> None:
    """What `pip install` leaves behind: the module and a dist-info with METADATA and entry_points.txt."""
    _write(site, "bench_plugin_pkg/__init__.py", "")
    _write(site, "bench_plugin_pkg/evals.py", module_text)
    info = site / "bench_plugin_pkg-0.1.dist-info"
    _write(info, "METADATA", "Metadata-Version: 2.1\nName: bench-plugin-pkg\nVersion: 0.1\n")
    _write(info, "entry_points.txt", "[evalbench.plugins]\nbench = bench_plugin_pkg.evals\n")


def test_an_installed_entry_point_is_loaded_without_imports(workdir, tmp_path):
    site = tmp_path / "site"
    _install_plugin(site, USER_MODULE)
    env = {"PYTHONPATH": f"{site}:{Path(__file__).resolve().parents[1]}"}
    res = run_engine(_arc("+task._target_=shout_qa", "harness.tools=[my_calculator]"), workdir, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _shouted(res.stdout)

    _install_plugin(site, "raise RuntimeError('plugin is broken')\n")
    _refused(run_engine(_arc(), workdir, timeout=300, env=env), "evalbench plugin 'bench'",
             "package bench-plugin-pkg", "RuntimeError: plugin is broken", "pip uninstall bench-plugin-pkg")

