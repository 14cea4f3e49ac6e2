"""A task's configuration in three parts (docs/architecture.md, "Task configuration"): flat YAML keys in,
flat dumps out, the task hash unchanged; names come from the registries that define them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from engine.config import names
from engine.config.compose import compose_experiment, compose_task
from engine.config.errors import ConfigError, format_validation_error
from engine.config.schema import DataConfig, Experiment, TaskConfig, TaskData, TaskPrompt, TaskScoring
from engine.tasks.task import build_task

# Task hashes computed on the flat TaskConfig, before it was split into parts (commit 0c27008): a changed
# hash would orphan every cached response and stop `engine.compare` from pairing old runs with new ones.
PINNED_TASK_HASHES = {
    "mmlu": "4fda17390249aadb",
    "mmlu:rc:5shot": "d2a9fb4695723e82",
    "gsm8k:3shot": "f783a07698e43ee0",
    "humaneval": "ac23f95d4975bc37",
    "arc_easy:rc": "2fff5c9a45b3e004",
    "winogrande": "41939ef28f4c256d",
    "hellaswag:olmes": "22ca489c5ce39a04",
    "freshqa": "bec1d89aa73736a9",
    "lm_eval_hellaswag": "eab76985834a3024",
}


@pytest.mark.parametrize("spec", sorted(PINNED_TASK_HASHES))
def test_the_task_hash_of_a_builtin_task_is_what_it_was_before_the_split(spec):
    assert build_task(compose_task(spec)).task_hash == PINNED_TASK_HASHES[spec]


def test_a_task_dumps_flat_and_validates_back_to_itself():
    task = compose_task("gsm8k:3shot")
    dumped = task.model_dump(mode="json", by_alias=True)
    assert {"dataset", "prompt", "scoring"}.isdisjoint(dumped)
    assert set(dumped) == set(TaskConfig.flat_keys()) - {"metrics"} | {"variants"}  # `metrics`: not in the hash
    assert dumped["data"]["path"] == task.data.path and dumped["num_fewshot"] == task.prompt.num_fewshot == 3
    assert TaskConfig.model_validate(dumped) == task
    exp = compose_experiment(["task=gsm8k", "task.generation.max_tokens=16"])
    assert exp.model_dump(mode="json", by_alias=True)["task"]["generation"]["max_tokens"] == 16


def test_flat_keys_land_in_their_parts_and_the_parts_are_frozen():
    task = TaskConfig.model_validate({"name": "q", "data": {"split": "dev"}, "fields": {"gold": "answer"},
                                      "num_fewshot": 2, "scorers": ["contains"], "formulation": "generate",
                                      "primary_metric": "contains", "metrics": [], "_target_": None})
    assert isinstance(task.dataset, TaskData) and task.dataset.source.split == "dev" == task.data.split
    assert task.dataset.fields.gold == "answer"
    assert isinstance(task.prompt, TaskPrompt) and task.prompt.num_fewshot == 2
    assert isinstance(task.scoring, TaskScoring) and task.scoring.scorers == ["contains"]
    with pytest.raises(ValidationError):
        task.prompt.num_fewshot = 3  # type: ignore[misc]
    # a part given whole, as Python code may build one
    whole = TaskConfig(name="q", dataset=TaskData(source=DataConfig(split="dev")), formulation="mc")
    assert whole.data.split == "dev" and whole.scoring.primary_metric == "acc"


def test_model_copy_replaces_a_flat_key_inside_its_part():
    task = compose_task("mmlu")
    copy = task.model_copy(update={"data": DataConfig(path="csv"), "num_fewshot": 3, "formulation": "rc"})
    assert (copy.data.path, copy.prompt.num_fewshot, copy.formulation) == ("csv", 3, "rc")
    assert (task.data.path, task.prompt.num_fewshot) == ("json", 0)  # the original is untouched
    assert copy.prompt.mc_template == task.prompt.mc_template and copy.dataset.fields == task.dataset.fields


@pytest.mark.parametrize(("raw", "needles"), [
    ({"data": {"pth": "x"}}, ["unknown key `task.data.pth`", "did you mean path", "valid keys there: path, subset"]),
    ({"mc_templat": "q"}, ["unknown key `task.mc_templat`", "did you mean mc_template", "num_fewshot", "scorers"]),
    ({"fewshot": {"sed": 1}}, ["unknown key `task.fewshot.sed`", "did you mean seed"]),
    ({"generation": {"max_tokens": 0}}, ["`task.generation.max_tokens` must be ≥ 1"]),
    ({"sample_size": 0}, ["`task.sample_size` must be ≥ 1"]),
    ({"data": None}, ["`task.data`"]),
])
def test_errors_name_the_flat_key_a_task_file_writes(raw, needles):
    with pytest.raises(ValidationError) as err:
        Experiment.model_validate({"model": {"name": "m"}, "task": {"name": "q", "data": {}, **raw}})
    text = str(format_validation_error(err.value, Experiment))
    for needle in needles:
        assert needle in text, text
    assert "dataset" not in text and "prompt." not in text and "scoring" not in text, text


def test_a_part_name_given_a_plain_value_is_named_as_written():
    with pytest.raises(ValidationError) as err:
        Experiment.model_validate({"model": {"name": "m"}, "task": {"name": "q", "data": {}, "prompt": "Q:"}})
    assert "`task.prompt`: Input should be a valid dictionary" in str(format_validation_error(err.value, Experiment))


def test_an_unknown_typed_key_is_refused_naming_the_flat_keys():
    with pytest.raises(ConfigError, match=r"there is no `mc_templat` under task; valid keys there: .*mc_template"):
        compose_experiment(["task.mc_templat=x"])
    with pytest.raises(ConfigError, match=r"no `pth` under task.data; valid keys there: path"):
        compose_experiment(["task.data.pth=x"])


# -- names come from the registries ----------------------------------------------------------------
def test_the_engine_scores_are_what_its_scoring_declares():
    assert names.formulation_metrics("mc", "none") == {"acc"}
    assert names.formulation_metrics("rc", "uncond") == {"acc", "acc_none", "acc_per_token", "acc_per_char", "bpb",
                                                         "acc_uncond"}
    assert names.formulation_metrics("generate", "none") == {"exact_match"}
    assert names.engine_metrics() == {"acc", "acc_none", "acc_per_token", "acc_per_char", "acc_uncond", "bpb",
                                      "exact_match", "pass", "contains", "relaxed_match", "judge", "logprob_margin"}
    assert names.task_metrics("engine.tasks.code.HumanEvalTask") == names.task_metrics("humaneval") == {
        "generate": frozenset({"pass"})}
    assert names.task_metrics("my.module.Mine") is None  # a user's class may score anything


def test_a_fresh_process_knows_the_builtin_names_without_importing_their_packages():
    code = ("from engine.config.schema import TaskConfig\n"
            "t = TaskConfig.model_validate({'name': 'q', 'data': {}, 'formulation': 'generate', "
            "'scorers': ['relaxed_match'], 'primary_metric': 'relaxed_match'})\n"
            "print(sorted(t.metrics()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "['exact_match', 'relaxed_match']"
