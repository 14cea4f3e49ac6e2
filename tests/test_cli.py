"""The command line as a user meets it: clear one-paragraph errors (exit 2), specs, listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_engine


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["task=mmlx"], "Unknown task 'mmlx'. Did you mean 'mmlu'"),
        (["variant=3sht"], "Unknown variant '3sht' for task 'mmlu'. Did you mean '3shot'"),
        (["-m", "model.path=a,b", "task=nope"], "Unknown task 'nope'"),
        (["model.batch_size=abc"], "`model.batch_size`: Input should be a valid integer"),
        (["+task.fewshots=3"], "unknown key `task.fewshots` (did you mean fewshot"),
        (["task.fewshots=3"], "Unknown key `task.fewshots` (did you mean `fewshot`"),  # not Hydra's "use +"
        (["model=litellm", "task=mmlu"], "cannot compute: the server is not declared to return prompt logprobs"),
        (["model.path=/nonexistent/ckpt", "limit=1"], "model.path '/nonexistent/ckpt' does not exist"),
        (["task=:rc"], "Task spec ':rc' has an empty part"),
        (["task=mmlu::rc"], "Task spec 'mmlu::rc' has an empty part"),
        (["variant=[rc,mc]"], "Variants 'rc' and 'mc' conflict"),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(args, expected, workdir):
    res = run_engine([*args, "tracking=none"], workdir, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert expected in res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert res.stderr.strip().startswith("error:") and res.stderr.strip().count("\n") == 0


def test_variant_list_and_spec_string_name_the_same_task(workdir):
    res = run_engine(["task=mmlu", "variant=[rc,3shot]", "inspect=true", "limit=1"], workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    header = next(line for line in res.stdout.splitlines() if line.startswith("==="))
    from engine.config.compose import compose_task
    from engine.tasks import build_task

    assert header.startswith("=== mmlu:rc:3shot ")
    assert build_task(compose_task("mmlu:rc:3shot")).task_hash in header
    assert "[continuation" in res.stdout and "tokens]" in res.stdout


def test_listing_what_exists():
    res = subprocess.run([sys.executable, "-m", "engine.list"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for group in ("task", "variant", "suite", "harness", "model", "tracking"):
        assert f"{group} (" in res.stdout
    assert "mmlu" in res.stdout and "base_qa" in res.stdout and "search_agent" in res.stdout
    for group in ("tool", "scaffold", "scorer", "metric"):  # the code registries too
        assert f"\n{group} (" in res.stdout


def test_listing_as_json_is_whole_and_names_every_registry():
    res = subprocess.run([sys.executable, "-m", "engine.list", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    by = {(r["group"], r["name"]): r for r in rows}
    assert {r["group"] for r in rows} == {"task", "variant", "suite", "harness", "model", "tracking", "tool",
                                          "scaffold", "scorer", "metric"}
    # untruncated: the whole leading comment of the YAML file, the whole first paragraph of a docstring
    gsm8k = (REPO / "conf" / "task" / "gsm8k.yaml").read_text().splitlines()
    assert " ".join(x.lstrip("# ").strip() for x in gsm8k[:2]) == by[("task", "gsm8k")]["description"]
    assert by[("tool", "python_exec")]["description"].startswith("Run a Python 3 program in a sandbox")
    assert by[("scorer", "relaxed_match")]["description"] and by[("scaffold", "single_turn")]["origin"] == "builtin"
    assert by[("task", "lm_eval_hellaswag")]["description"].startswith("[external: lm_eval]")


def test_listing_into_a_closed_pipe_ends_quietly():
    res = subprocess.run(f"{sys.executable} -m engine.list | head -1", shell=True, capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.startswith("task (") and "Traceback" not in res.stderr


def test_a_sweep_is_validated_whole_before_its_first_job(workdir):
    res = run_engine(["-m", "limit=1,abc", "inspect=true", "tracking=none"], workdir, timeout=300)
    assert res.returncode == 2 and "`limit`" in res.stderr, res.stderr[-2000:]
    assert "===" not in res.stdout  # job 0 (limit=1) never ran
    assert not (workdir / "runs").exists()


def test_a_task_spec_is_accepted_as_the_task(workdir):
    spec = run_engine(["task=freshqa:zero", "inspect=true", "limit=1", "tracking=none"], workdir, timeout=300)
    split = run_engine(["task=freshqa", "variant=zero", "inspect=true", "limit=1", "tracking=none"], workdir, timeout=300)
    assert spec.returncode == 0 and split.returncode == 0, spec.stderr[-2000:]
    assert spec.stdout == split.stdout and "=== freshqa:zero" in spec.stdout


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_fast_exit_runs_exit_handlers_flushes_and_keeps_the_code():
    # `python -m engine` ends with os._exit after the exit handlers: nothing buffered or registered is lost
    proc = _python("import atexit; from engine.__main__ import exit_now\n"
                   "atexit.register(print, 'handler ran')\n"
                   "print('buffered', end=' ')\n"
                   "exit_now(5)")
    assert (proc.returncode, proc.stdout) == (5, "buffered handler ran\n"), proc.stderr
    message = _python("from engine.__main__ import exit_now; exit_now('error: a message')")
    assert (message.returncode, message.stderr) == (1, "error: a message\n")
    assert _python("from engine.__main__ import exit_now; exit_now(None)").returncode == 0


def test_fast_exit_leaves_live_threads_to_python():
    # A non-daemon thread still working must finish: Python's own exit joins it, os._exit would kill it
    proc = _python("import threading, time\nfrom engine.__main__ import exit_now\n"
                   "def work():\n    time.sleep(0.3)\n    print('thread finished', flush=True)\n"
                   "threading.Thread(target=work).start()\n"
                   "exit_now(3)")
    assert (proc.returncode, proc.stdout) == (3, "thread finished\n"), proc.stderr


def _with_unread_stdout(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run argv with a stdout nobody reads: every write to it fails with EPIPE (`| head` at its worst)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)


def test_a_reader_that_stops_early_ends_the_run_quietly():
    # `python -m engine --help | head -1`: the reader goes away; exit 1 without a BrokenPipeError traceback
    proc = _with_unread_stdout([sys.executable, "-m", "engine", "--help"])
    assert (proc.returncode, proc.stderr) == (1, "")
    # only a stdout nobody reads counts: a BrokenPipeError with stdout still read stays an error
    check = "import sys; from engine.__main__ import stdout_closed; print(stdout_closed(), file=sys.stderr)"
    assert _with_unread_stdout([sys.executable, "-c", check]).stderr.strip() == "True"
    assert _python(check).stderr.strip() == "False"


def test_help_is_evalbenchs_own_page_and_lists_a_users_groups(tmp_path):
    (tmp_path / "evals" / "task").mkdir(parents=True)
    (tmp_path / "evals" / "task" / "my_capitals.yaml").write_text("# mine\nname: my_capitals\n")
    res = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "EVALBENCH_CONFIG_PATH": str(tmp_path / "evals")})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: python -m engine") and "powered by Hydra" not in res.stdout
    for line in ("config groups", "exit codes", "task=NAME[:VARIANT...]", "python -m engine.list"):
        assert line in res.stdout
    assert "my_capitals" in res.stdout and "gsm8k" in res.stdout  # the user's task beside the built-in ones
    # every exit code the CLI defines is explained
    from engine import outcome

    for code in (outcome.EXIT_FAILED, outcome.EXIT_PARTIAL, outcome.EXIT_UNTRACKED, outcome.EXIT_INTERRUPTED,
                 outcome.EXIT_TERMINATED):
        assert f"{code} " in res.stdout.split("exit codes:")[1]
    hydra = subprocess.run([sys.executable, "-m", "engine", "--hydra-help"], capture_output=True, text=True, timeout=120)
    assert hydra.returncode == 0 and "Hydra" in hydra.stdout
