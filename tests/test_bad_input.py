"""Bad input is refused up front: exit 2, one paragraph naming the key and the fix, no traceback.

Each case runs `python -m engine` with `inspect=true`, so no model ever runs: the refusal comes from
validation (or from loading the data), before any request.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.schema import FieldMap
from engine.tasks.instance import FieldMapError, render_template, row_to_instance
from tests.conftest import run_engine


def assert_refused(res, *needles: str) -> str:
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:], res.stdout[-1000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert err.startswith("error:") and "\n" not in err, err  # one paragraph
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["harness.concurrency=-3"], ["`harness.concurrency` must be ≥ 1", "harness.concurrency=4"]),
        (["limit=0"], ["`limit` must be ≥ 1 (got 0)", "limit=null"]),
        (["limit=-5"], ["`limit` must be ≥ 1 (got -5)", "limit=null"]),
        (["harness.request_timeout_s=0"], ["`harness.request_timeout_s` must be > 0", "request_timeout_s=600"]),
        (["harness.max_retries=-1"], ["`harness.max_retries` must be ≥ 0", "max_retries=0"]),
        (["task=gsm8k", "task.generation.max_tokens=-4"], ["`task.generation.max_tokens` must be ≥ 1"]),
        (["model.max_length=-5"], ["`model.max_length` must be ≥ 2 (got -5)", "model.max_length=2048"]),
        (["task=humaneval", "task.pass_at_k=[1,10]"], ["`task.pass_at_k` asks for pass@10", "samples`=1",
                                                       "variant=pass_at_10"]),
        (["task=freshqa", "task.scorers=[contans]"], ["Unknown scorer 'contans' in `task.scorers`", "Did you mean 'contains'", "relaxed_match",
                                                  "`@scorer`"]),
        (["task.primary_metric=accuracy"], ["`task.primary_metric` is 'accuracy'", "did you mean 'acc'", "produces only acc"]),
        # the cot variant makes MMLU a generation task, which writes exact_match, not acc
        (["variant=cot"], ["`task.primary_metric` is 'acc'", "formulation generate", "exact_match"]),
        (["suite=base_qa", "suite.tasks=[mmlu::rc,gsm8k]"], ["'mmlu::rc' has an empty part", "task:variant"]),
        (["suite=base_qa", "suite.tasks=[':rc']"], ["':rc' has an empty part"]),
        (["task.fields.query='{question'"], ["`task.fields.query` template '{question'", "close every `{`"]),
        (["task.mc_template='{query} {foo}'"], ["`task.mc_template`", "`{foo}`", "task.fields.query"]),
        # issue 24: a key the provider does not read is refused, with or without Hydra's `+`
        (["model=smollm2", "model.api_base=http://127.0.0.1:9/v1"],
         ["`model.api_base` is set", "provider hf does not use it", "model=litellm"]),
        (["model=smollm2", "+model.api_base=http://127.0.0.1:9/v1"], ["`model.api_base` is set", "provider hf"]),
        (["model=litellm", "model.dtype=bfloat16"], ["`model.dtype` is set", "provider litellm does not use it"]),
        # exact_match is the engine's own score: a precise error where the formulation does not write it
        (["task=mmlu", "task.scorers=[exact_match]"], ["'exact_match', a score the engine computes itself",
                                                      "formulation generate", "task.formulation=generate"]),
        (["harness.sandboxes=[{name: x, backend: nope}]"], ["`harness.sandboxes[0]` (pool 'x') has backend 'nope'",
                                                            "local, bwrap, docker"]),
        (["harness.sandboxes=[{name: x, backend: local, instance: 2}]"], ["unknown key 'instance'", "'instances'"]),
        # unknown keys in each group: named with the valid keys, never "use +key"
        (["model.foo=1"], ["Unknown key `model.foo`", "valid keys there"]),
        (["+model.foo=1"], ["unknown key `model.foo`", "valid keys there"]),
        (["harness.concurency=2"], ["Unknown key `harness.concurency`", "did you mean `concurrency`"]),
        (["task.fewshot.sed=1"], ["Unknown key `task.fewshot.sed`", "`seed`"]),
        (["tracking.uri=x"], ["Unknown key `tracking.uri`", "tracking_uri"]),
        (["limit=abc"], ["`limit`", "valid integer", "'abc'"]),
        (["harness.concurrency=abc"], ["`harness.concurrency`", "valid integer"]),
        (["task.num_fewshot=-1"], ["`task.num_fewshot` must be ≥ 0"]),
        (["task.formulation=xyz"], ["`task.formulation`", "'xyz'"]),
        (["model.dtype=int8"], ["`model.dtype`", "'int8'"]),
        (["task=gsm8k", "task.generation.temperature=-1"], ["`task.generation.temperature` must be ≥ 0"]),
        (["task=mmlu:nosuchvariant"], ["Unknown variant 'nosuchvariant' for task 'mmlu'"]),
        (["task=nosuchtask"], ["Unknown task 'nosuchtask'"]),
        (["tracking=nope"], ["Unknown tracking 'nope'"]),
        (["suite=base_qa", "suite.tasks=[]"], ["suite 'base_qa' lists no tasks", "suite.tasks="]),
        (["task=freshqa", "task.data.data_files=/nonexistent.jsonl"], ["/nonexistent.jsonl", "task.data.data_files"]),
        (["harness.auxiliary={judge: {provider: nope}}"], ["`harness.auxiliary.judge` has the unknown key 'provider'",
                                                          "harness.auxiliary.judge.model"]),
        (["harness.auxiliary={judje: {}}"], ["`harness.auxiliary.judje` is not an auxiliary provider"]),
        (["harness=judge", "harness.auxiliary.judge.model.dtype=int8"], ["`harness.auxiliary.judge.model.dtype`",
                                                                         "'int8'"]),
        (["hydra/launcher=nope"], ["Could not find 'hydra/launcher/nope'", "joblib", "Fix: choose one"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and "=" in v[0] else None,
)
def test_bad_setting_is_refused_before_running(args, needles, workdir):
    assert_refused(run_engine([*args, "inspect=true", "tracking=none"], workdir, timeout=300), *needles)


@pytest.mark.parametrize(("key", "value"), [
    ("model.batch_size", 0), ("model.max_length", 1), ("model.timeout_s", 0), ("model.checkpoint_step", -1),
    ("task.sample_size", 0), ("task.sample_threshold", 0), ("task.execution_timeout_s", 0),
    ("harness.max_total_tokens", 0), ("harness.max_time_s", 0),
])
def test_every_count_and_duration_has_its_bound(key, value):
    """A count or duration outside its range is refused at validation, naming the key: a zero
    timeout or batch would otherwise fail (or loop) far into the run."""
    from pydantic import ValidationError

    from engine.config.errors import format_validation_error
    from engine.config.schema import Experiment

    section, field = key.split(".")
    cfg: dict = {"model": {"name": "m"}, "task": {"name": "t", "data": {"path": "json"}}}
    cfg.setdefault(section, {})[field] = value
    with pytest.raises(ValidationError) as err:
        Experiment.model_validate(cfg)
    assert f"`{key}` must be" in str(format_validation_error(err.value, Experiment))


def test_valid_settings_still_run(workdir):
    res = run_engine(["task=freshqa", "variant=judge", "inspect=true", "limit=1", "tracking=none"], workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "=== freshqa:judge" in res.stdout


# -- data errors: each names the file / row / instance and the fix, no traceback --------------
def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _run_on(data_file: str, workdir: Path, task: str = "freshqa", *extra: str):
    return run_engine([f"task={task}", f"task.data.data_files={data_file}", *extra, "inspect=true", "tracking=none"],
                      workdir, timeout=300)


def test_empty_data_file(workdir):
    (workdir / "empty.jsonl").write_text("")
    assert_refused(_run_on(str(workdir / "empty.jsonl"), workdir), "empty.jsonl is empty", "task.data.data_files")


def test_malformed_jsonl_line_names_file_and_line(workdir):
    path = _jsonl(workdir / "bad.jsonl", [{"id": "a", "question": "q1", "answer": "x"},
                                          '{"id": "b", "question": "q2", "answer": "y"',
                                          {"id": "c", "question": "q3", "answer": "z"}])
    assert_refused(_run_on(path, workdir), "bad.jsonl, line 2: not valid JSON")


def test_duplicate_instance_ids_are_named(workdir):
    path = _jsonl(workdir / "dup.jsonl", [{"id": i, "question": f"q{n}", "answer": "x"}
                                          for n, i in enumerate(["x", "y", "x", "z", "y"])])
    assert_refused(_run_on(path, workdir), "'x' (rows 0, 2)", "'y' (rows 1, 4)", "task.fields.id")


def test_instance_without_choices(workdir):
    path = _jsonl(workdir / "mc.jsonl", [{"question": "q1", "choices": ["a", "b"], "expected_index": 0},
                                         {"question": "q2", "choices": [], "expected_index": 0}])
    assert_refused(_run_on(path, workdir, "truthfulqa_mc1"), "instance '1' (row 1) has no choices", "task.data.exclude")


def test_gold_map_out_of_range():
    fields = FieldMap(query="{sentence}", choices=["option1", "option2"], gold="answer", gold_map={"1": 0, "2": 2})
    with pytest.raises(FieldMapError, match=r"instance '0' \(row 0\): gold index 2 is out of range for its 2 choices"):
        row_to_instance({"sentence": "The _ won.", "option1": "a", "option2": "b", "answer": "2"}, 0, fields)


def test_template_that_does_not_render_is_a_field_map_error():
    with pytest.raises(FieldMapError, match=r"`fields.query` template '\{a\}\{' cannot be rendered"):
        render_template("{a}{", {"a": 1}, "`fields.query`")


def test_a_model_path_that_is_not_a_checkpoint_is_refused_up_front(workdir):
    (workdir / "notamodel").mkdir()
    (workdir / "notamodel" / "readme.txt").write_text("hello")
    res = run_engine(["model.path=notamodel", "limit=2", "tracking=none"], workdir, timeout=300)
    assert_refused(res, "is not a Hugging Face checkpoint directory", "config.json", "weights")


def test_a_read_only_output_folder_is_refused_before_any_compute(workdir):
    import os

    if os.geteuid() == 0:  # root writes anyway: make the "folder" a file instead
        (workdir / "ro").write_text("a file, not a folder")
        target = workdir / "ro" / "runs"
    else:
        (workdir / "ro").mkdir(mode=0o500)
        target = workdir / "ro"
    res = run_engine([f"output_dir={target}", "limit=2", "tracking=none"], workdir, timeout=300)
    assert_refused(res, "is not writable", "output_dir=")
    assert not (workdir / ".cache").exists()  # refused before the cache or the model were touched


def test_the_lean_client_without_a_server_is_refused():
    from pydantic import ValidationError

    from engine.config.schema import ModelConfig

    with pytest.raises(ValidationError, match="model.api_base=<server URL>"):
        ModelConfig(provider="litellm", name="openai/x", client="lean")
    assert ModelConfig(provider="litellm", name="openai/x", api_base="http://127.0.0.1:1/v1", client="lean").client == "lean"


def test_a_task_file_that_does_not_parse_names_the_file_and_line(workdir):
    (workdir / "conf" / "task").mkdir(parents=True)
    (workdir / "conf" / "task" / "broken.yaml").write_text("name: broken\ndata: {path: json\n  bad: [\n")
    res = run_engine(["task=broken", "inspect=true", "tracking=none"], workdir, timeout=300,
                     env={"EVALBENCH_CONFIG_PATH": str(workdir / "conf")})
    assert_refused(res, "a YAML file does not parse", "broken.yaml\", line 3", "Fix that file")


def test_a_folder_that_is_not_a_checkpoint_names_what_is_missing(workdir):
    (workdir / "ckpt").mkdir()
    (workdir / "ckpt" / "config.json").write_text("{}")
    res = run_engine(["task=mmlu:mc", "limit=1", f"model.path={workdir / 'ckpt'}", "tracking=none"], workdir, timeout=300)
    assert_refused(res, "no weights (*.safetensors or *.bin), no tokenizer (tokenizer.json", "save_pretrained")


def test_a_task_without_data_reads_nothing_from_the_working_directory(workdir):
    """issue 24: a task file without `data:` once evaluated whatever test.jsonl lay in the working folder."""
    (workdir / "evals" / "task").mkdir(parents=True)
    task_file = workdir / "evals" / "task" / "nodata.yaml"
    task_file.write_text("name: nodata\nfields: {query: '{question}', gold: answer}\nformulation: generate\n"
                         "primary_metric: exact_match\n")
    _jsonl(workdir / "test.jsonl", [{"question": "q1", "answer": "a"}])
    res = run_engine(["task=nodata", "inspect=true", "tracking=none"], workdir, timeout=300,
                     env={"EVALBENCH_CONFIG_PATH": str(workdir / "evals")})
    assert_refused(res, "Task 'nodata' names no data", str(task_file), "data_files", "never reads files from the working")


def test_a_data_file_without_the_tasks_fields_names_the_field(workdir):
    path = _jsonl(workdir / "wrong.jsonl", [{"foo": 1}, {"foo": 2}])
    assert_refused(_run_on(path, workdir), "not a column of the data (['foo'])", "Fix: point `task.fields`")


def test_exact_match_in_the_scorers_of_a_generation_task_is_a_no_op_with_a_note(workdir):
    res = run_engine(["task=gsm8k", "task.scorers=[exact_match]", "inspect=true", "limit=1", "tracking=none"],
                     workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "`task.scorers` lists exact_match, which the engine computes for every generate task already" in res.stderr


def test_a_plus_is_asked_for_only_when_the_configuration_is_valid_with_it(workdir):
    args = ["model=litellm", "model.name=openai/x", "model.api_base=http://127.0.0.1:9/v1", "task=freshqa",
            "inspect=true", "limit=1", "tracking=none"]
    res = run_engine([*args, "model.max_length=4096"], workdir, timeout=300)
    assert_refused(res, "`model.max_length`: a key the chosen config file does not set",
                   "write `+model.max_length=4096`")
    res = run_engine([*args, "+model.max_length=4096"], workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_the_sandbox_pool_keys_config_checks_are_the_sandbox_packages():
    from typing import get_args

    from engine.config import names
    from engine.sandbox.models import BackendName, SandboxPoolConfig

    assert names.keys_of("sandbox_pool") == tuple(SandboxPoolConfig.model_fields)  # declared by the package
    assert names.keys_of("sandbox_backend") == get_args(BackendName)


def test_the_auxiliary_keys_config_checks_are_the_judges():
    from engine.config import names
    from engine.scoring.judge import JudgeConfig

    assert names.keys_of("auxiliary.judge") == tuple(JudgeConfig.model_fields)
    assert names.auxiliaries() == ["judge"]


def test_tasks_that_inherit_their_data_or_make_their_own_instances_still_run(workdir):
    """A task extending another through its defaults list inherits its data; a task class (`_target_`)
    may make its instances itself, so it is not refused for naming no data at composition."""
    (workdir / "evals" / "task").mkdir(parents=True)
    (workdir / "evals" / "task" / "my_gsm8k.yaml").write_text("defaults:\n  - gsm8k\n  - _self_\n\nname: my_gsm8k\n")
    (workdir / "evals" / "task" / "coded.yaml").write_text(
        "_target_: engine.tasks.code.HumanEvalTask\nname: coded\nformulation: generate\nrequires: [python]\n"
        "fields: {id: task_id, query: '{prompt}'}\nprimary_metric: pass@1\npass_at_k: [1]\n")
    env = {"EVALBENCH_CONFIG_PATH": str(workdir / "evals")}
    res = run_engine(["task=my_gsm8k", "inspect=true", "limit=1", "tracking=none"], workdir, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    # HumanEvalTask reads `task.data`, so the data layer refuses at loading: one paragraph, exit 2.
    res = run_engine(["task=coded", "inspect=true", "limit=1", "tracking=none"], workdir, timeout=300, env=env)
    assert_refused(res, "The task names no data to read", "data_files")


def test_a_sandbox_pool_with_a_bad_value_is_one_paragraph_before_any_model_call(workdir):
    """A known pool key with a value out of its range is checked where the pools are built (the
    sandbox layer owns their model): exit 2, one paragraph naming the key, before the model loads."""
    res = run_engine(["task=humaneval", "limit=1", "+harness.sandboxes=[{name: x, backend: local, instances: 0}]",
                      "tracking=none"], workdir, timeout=300)
    assert_refused(res, "`harness.sandboxes.instances` must be ≥ 1 (got 0)")
    assert not list(workdir.rglob("instances.jsonl"))  # nothing ran
