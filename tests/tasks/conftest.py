"""Hub-backed tasks run here on small fixture files of the hub datasets' exact shape."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import pytest

import engine.tasks.task as task_module
from engine.config.compose import compose_task as _compose_task
from engine.config.schema import DataConfig, TaskConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# task name -> fixture folder; every hub-backed task config has one
HUB_TASKS = {
    "arc_challenge": "arc_challenge",
    "arc_easy": "arc_easy",
    "boolq": "boolq",
    "csqa": "csqa",
    "hellaswag_hub": "hellaswag_hub",
    "mmlu_hub": "mmlu_hub",
    "openbookqa": "openbookqa",
    "piqa": "piqa",
    "socialiqa": "socialiqa",
    "winogrande": "winogrande",
    "sciq": "sciq",
}
WHEEL_TASKS = {"mmlu", "hellaswag", "truthfulqa_mc1", "gsm8k", "humaneval", "lm_eval_hellaswag", "inspect_mmlu"}
LOCAL_TASKS = {"freshqa", "ellisande_qa"}  # read their own data files (data/) by default


@lru_cache(maxsize=None)
def compose_task(spec: str) -> TaskConfig:
    """compose_task, memoized: Hydra composition costs ~0.3 s and configs are frozen."""
    return _compose_task(spec)


@pytest.fixture(autouse=True, scope="session")
def _memo_rows():
    """Each fixture file is read through `datasets` once per session (the loading path stays real)."""
    real = task_module.load_rows
    memo: dict[str, list] = {}

    def load_rows(cfg, split=None):
        key = cfg.model_dump_json() + f"|{split}"
        if key not in memo:
            memo[key] = real(cfg, split)
        return copy.deepcopy(memo[key])

    task_module.load_rows = load_rows
    yield
    task_module.load_rows = real


def fixture_files(name: str) -> dict[str, str]:
    return {p.stem: str(p) for p in sorted((FIXTURES / HUB_TASKS[name]).glob("*.jsonl"))}


def on_fixture(spec: str) -> TaskConfig:
    """The composed task of `spec`, reading its fixture files instead of the hub
    (what `task.data.path=json task.data.data_files={split: FILE}` does on the command line)."""
    cfg = compose_task(spec)
    data = DataConfig(path="json", data_files=fixture_files(cfg.name), split=cfg.data.split)
    return cfg.model_copy(update={"data": data})
