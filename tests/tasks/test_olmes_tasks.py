"""OLMES task configs on hub-shaped fixtures: field maps, prompts, formulations, scoring."""

from __future__ import annotations

import json
import math
import random

import pytest

from engine.config.compose import known_names
from engine.config.schema import DataConfig
from engine.config.suites import expand_task
from engine.scoring import score_response
from engine.tasks import build_task
from engine.types import LoglikelihoodRequest, LoglikelihoodResponse
from tests.tasks.conftest import FIXTURES, HUB_TASKS, LOCAL_TASKS, WHEEL_TASKS, compose_task, fixture_files, on_fixture

OLMES_NORMALIZATION = {
    "arc_easy": "per_char", "hellaswag_hub": "per_char", "piqa": "per_char", "socialiqa": "per_char",
    "mmlu_hub": "per_char", "mmlu": "per_char", "hellaswag": "per_char",
    "arc_challenge": "uncond", "csqa": "uncond", "openbookqa": "uncond",
    "boolq": "none", "winogrande": "none",
}
HUB_IDS = {
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"), "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "boolq": ("google/boolq", None, "validation"), "csqa": ("tau/commonsense_qa", None, "validation"),
    "hellaswag_hub": ("Rowan/hellaswag", None, "validation"), "mmlu_hub": ("cais/mmlu", "all", "test"),
    "openbookqa": ("allenai/openbookqa", "main", "test"), "piqa": ("ybisk/piqa", None, "validation"),
    "socialiqa": ("allenai/social_i_qa", None, "validation"),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"), "sciq": ("allenai/sciq", None, "test"),
}
CHOICE_TASKS = [t for t in HUB_TASKS]


def resp(lps, counts=None, uncond=None):
    n = len(lps)
    return LoglikelihoodResponse(logprobs=tuple(lps), token_counts=tuple(counts or [1] * n), is_greedy=(False,) * n,
                                 unconditional_logprobs=None if uncond is None else tuple(uncond))


def test_every_task_config_has_a_fixture_or_wheel_data():
    names = set(known_names("task"))
    assert names == set(HUB_TASKS) | WHEEL_TASKS | LOCAL_TASKS
    for name, (path, subset, split) in HUB_IDS.items():
        cfg = compose_task(name)
        assert (cfg.data.path, cfg.data.subset, cfg.data.split) == (path, subset, split)
        assert split in fixture_files(name), f"fixture for {name} lacks its {split} split"


def test_olmes_normalization_per_task():
    for name, norm in OLMES_NORMALIZATION.items():
        assert compose_task(name).scoring.normalization == norm, name


@pytest.mark.parametrize("name", CHOICE_TASKS)
def test_rc_mc_bpb_requests_on_fixture(name):
    rc = build_task(on_fixture(f"{name}:rc"))
    insts = rc.load_instances()
    assert len(insts) >= 3 and all(0 <= i.gold < len(i.choices) for i in insts)
    inst = insts[0]
    req = rc.build_request(inst)
    assert isinstance(req, LoglikelihoodRequest)
    if name == "winogrande":  # partial scoring: option+rest and option, per option
        assert len(req.continuations) == 2 * len(inst.choices)
    else:
        assert req.continuations == tuple(" " + c for c in inst.choices)
    assert (req.unconditional_context == "Answer:") == (rc.config.scoring.normalization == "uncond")
    mc = build_task(on_fixture(f"{name}:mc"))
    mreq = mc.build_request(inst)
    assert mreq.continuations == tuple(f" {'ABCDE'[i]}" for i in range(len(inst.choices)))
    assert mreq.context.endswith("Answer:") and "\n A. " in mreq.context and mreq.unconditional_context is None
    bpb = build_task(on_fixture(f"{name}:bpb"))
    breq = bpb.build_request(inst)
    assert len(breq.continuations) == (2 if name == "winogrande" else 1)
    assert bpb.config.scoring.primary_metric == "bpb"


@pytest.mark.parametrize("name", [t for t in HUB_TASKS if compose_task(t).prompt.fewshot.curated])
def test_curated_five_shots_precede_the_question(name):
    cfg = on_fixture(name)
    assert cfg.prompt.num_fewshot == 5 and len(cfg.prompt.fewshot.curated) >= 5
    task = build_task(cfg)
    insts = task.load_instances()
    shots = task.fewshot_for(insts[0])
    assert [s.query for s in shots] == [c.query for c in task.curated[:5]]
    assert shots == task.fewshot_for(insts[1])  # a fixed set, the same for every question
    ctx = task.build_request(insts[0]).context
    if name == "winogrande":  # examples show the sentence filled with the right option
        first, last, own = shots[0].query.replace("_", "garage"), shots[4].query.replace("_", "Craig"), insts[0].query[:30]
    else:
        first, last, own = shots[0].query, shots[4].query, insts[0].query
    assert ctx.index(first) < ctx.index(last) < ctx.rindex(own)


def test_arc_labels_numeric_and_three_choices():
    insts = build_task(on_fixture("arc_challenge")).load_instances()
    numeric = next(i for i in insts if i.row["choices"]["label"][0] == "1")
    assert numeric.row["answerKey"] == "3" and numeric.gold == 2 and numeric.choices[2] == "the Moon"
    three = next(i for i in insts if len(i.choices) == 3)
    assert three.choices[three.gold] == "condensation"


def test_boolq_socialiqa_winogrande_piqa_gold_mapping():
    b = build_task(on_fixture("boolq:rc")).load_instances()
    assert b[0].choices == ("yes", "no") and b[0].gold == 1 and b[1].gold == 0  # answer False / True
    ctx = build_task(on_fixture("boolq:0shot")).build_request(b[0]).context
    assert ctx.startswith("Ethanol fuel --") and ctx.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    s = build_task(on_fixture("socialiqa")).load_instances()
    assert [i.gold for i in s] == [2, 0, 2]
    w = build_task(on_fixture("winogrande")).load_instances()
    assert [i.gold for i in w] == [0, 1, 1, 0]
    p = build_task(on_fixture("piqa")).load_instances()
    assert [i.gold for i in p] == [0, 1, 1]


def test_sciq_gold_is_the_text_and_choices_are_shuffled_deterministically():
    insts = build_task(on_fixture("sciq:mc")).load_instances()
    assert [i.choices[i.gold] for i in insts] == ["oxidants", "clone", "4"]  # "4" is a text, not index 4
    assert insts == build_task(on_fixture("sciq:mc")).load_instances()
    assert {i.gold for i in insts} != {3}  # not always the correct_answer column
    gen = build_task(on_fixture("sciq"))
    assert gen.config.formulation == "generate" and gen.load_instances()[1].gold_text == "clone"


def test_hellaswag_preprocessing():
    insts = build_task(on_fixture("hellaswag_hub")).load_instances()
    assert insts[0].query == "Roof shingle removal: A man is sitting on a roof. He"  # ctx_b capitalized
    wiki = insts[2]
    assert "[" not in wiki.query and "Dust the wall. Use a soft" in wiki.query
    # exactly lm-eval's cleaning, quirks included (" [title]" -> ". " after a period, leading space)
    assert wiki.choices[0] == " Work from the top of the wall to the bottom.. Wash the wall with warm soapy water."
    assert wiki.query == "Home and Garden: How to clean a painted wall. Dust the wall. Use a soft, dry cloth or a duster to remove loose dirt."
    assert insts[0].gold == 3 and insts[0].id == "24"


def test_mmlu_hub_fewshot_from_dev_same_subject_macro():
    task = build_task(on_fixture("mmlu_hub"))
    assert task.config.scoring.aggregation == "macro" and compose_task("mmlu").scoring.aggregation == "macro"
    for inst in task.load_instances():
        shots = task.fewshot_for(inst)
        assert len(shots) == 2 and {s.cluster for s in shots} == {inst.cluster}  # 2 dev rows per subject here


def test_winogrande_partial_scoring():
    task = build_task(on_fixture("winogrande"))
    inst = task.load_instances()[0]  # "Sarah was a much better surgeon than Maria so _ always got the harder cases."
    req = task.build_request(inst)
    assert req.context.endswith("Craig promised to do so.\n\nSarah was a much better surgeon than Maria so ")
    assert req.continuations == ("Sarah always got the harder cases.", "Maria always got the harder cases.", "Sarah", "Maria")
    # full continuations favour option 2, but given the filled option the rest favours option 1
    scores, pred = score_response(task, inst, resp([-10.0, -9.0, -6.0, -2.0]))
    assert pred == 0 and scores["acc"] == 1.0
    rest = " always got the harder cases."
    assert scores["bpb"] == pytest.approx(4.0 / (len(rest.encode()) * math.log(2)))
    b = build_task(on_fixture("winogrande:bpb"))
    bscores, _ = score_response(b, inst, resp([-10.0, -6.0]))
    assert bscores == {"bpb": pytest.approx(4.0 / (len(rest) * math.log(2)))}
    mc = build_task(on_fixture("winogrande:mc"))
    assert mc.build_request(inst).continuations == (" A", " B")


def test_normalizations_pick_differently():
    task = build_task(on_fixture("arc_challenge:rc"))
    inst = task.load_instances()[0]  # choices of different lengths, gold 2
    lens = [len(c) for c in inst.choices]
    # raw favours choice 1; per-char favours the longest (gold 2); PMI favours choice 3
    lps = [-30.0, -20.0, -21.0, -40.0]
    uncond = [-30.0, -5.0, -20.0, -60.0]
    scores, pred = score_response(task, inst, resp(lps, counts=[5, 9, 2, 8], uncond=uncond))
    assert pred == 3 and scores["acc"] == 0.0  # task normalization: uncond
    assert scores["acc_none"] == 0.0 and scores["acc_uncond"] == 0.0
    per_char = [lp / n for lp, n in zip(lps, lens, strict=True)]
    assert scores["acc_per_char"] == float(max(range(4), key=per_char.__getitem__) == inst.gold)
    per_token = [lp / n for lp, n in zip(lps, [5, 9, 2, 8], strict=True)]
    assert scores["acc_per_token"] == float(max(range(4), key=per_token.__getitem__) == inst.gold)
    for norm, expect in (("none", 1), ("per_char", max(range(4), key=per_char.__getitem__)), ("uncond", 3)):
        t = build_task(on_fixture(f"arc_challenge:norm_{norm}"))
        assert score_response(t, inst, resp(lps, counts=[5, 9, 2, 8], uncond=uncond))[1] == expect
    bpb_gold = scores["bpb"]
    assert bpb_gold == pytest.approx(21.0 / (len((" " + inst.choices[2]).encode()) * math.log(2)))


def test_bpb_variant_on_a_generation_task():
    task = build_task(compose_task("gsm8k:bpb"))
    inst = task.load_instances()[0]
    req = task.build_request(inst)
    assert req.continuations == (" " + inst.gold_text,)
    assert score_response(task, inst, resp([-3.0]))[0] == {"bpb": pytest.approx(3.0 / ((1 + len(inst.gold_text)) * math.log(2)))}


def test_olmes_variant_runs_both_formats():
    cfg = on_fixture("arc_challenge:olmes")
    assert cfg.best_of == ["mc", "rc"]
    runs = expand_task("arc_challenge:olmes", cfg)
    assert [(r.spec, r.task.formulation, r.task.best_of) for r in runs] == [
        ("arc_challenge:olmes:mc", "mc", []), ("arc_challenge:olmes:rc", "rc", [])]
    assert build_task(runs[0].task).task_hash != build_task(runs[1].task).task_hash


def test_cot_variant_and_answer_extraction():
    cfg = on_fixture("sciq:cot")
    assert cfg.prompt.chain_of_thought and cfg.prompt.generation.max_tokens == 512
    task = build_task(cfg)
    inst = task.load_instances()[0]
    req = task.build_request(inst)
    assert req.prompt.endswith("are called what? Let's think step by step, then finish with \"The answer is ...\".\nAnswer:")
    out = type("R", (), {})()
    from engine.types import GenerateResponse

    scores, extracted = score_response(task, inst, GenerateResponse(text="They take electrons. The answer is oxidants."))
    assert extracted == "oxidants" and scores["exact_match"] == 1.0
    del out


def test_sampling_1000_of_a_large_split(tmp_path):
    rows = [{"question": f"q{i}", "answer": bool(i % 2), "passage": f"p{i}"} for i in range(1600)]
    path = tmp_path / "validation.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = compose_task("boolq").model_copy(
        update={"data": DataConfig(path="json", data_files={"validation": str(path)}, split="validation")})
    insts = build_task(cfg).load_instances()
    keep = sorted(random.Random(1234).sample(range(1600), 1000))
    assert [i.query for i in insts] == [f"p{k}\nQuestion: q{k}?" for k in keep]
    small = cfg.model_copy(update={"data": DataConfig(path="json", data_files=fixture_files("boolq"), split="validation")})
    assert len(build_task(small).load_instances()) == 3


def test_freshqa_relaxed_match_uses_aliases():
    from engine.types import GenerateResponse

    task = build_task(compose_task("freshqa").model_copy(update={"data": DataConfig(
        path="json", data_files=str(FIXTURES.parents[1] / "data" / "freshqa" / "freshqa.jsonl"), split="train")}))
    inst = task.load_instances()[0]
    assert task.config.scoring.primary_metric == "relaxed_match"
    scores, _ = score_response(task, inst, GenerateResponse(text=f"I believe it is {inst.gold_text}, as of 2023."))
    assert scores["relaxed_match"] == 1.0
    alias = inst.model_copy(update={"row": {**inst.row, "answer_1": "the ringed planet"}})
    assert score_response(task, alias, GenerateResponse(text="The ringed planet!"))[0]["relaxed_match"] == 1.0
    assert score_response(task, inst, GenerateResponse(text="Jupiter"))[0]["relaxed_match"] == 0.0



@pytest.mark.parametrize("name", sorted(HUB_TASKS))
def test_fixture_tasks_pass_the_gold_position_check(name):
    """Every hub task's fixture rows load in both choice formulations (the gold-position check
    of engine/tasks/instance.py runs on every load)."""
    for form in ("mc", "rc"):
        assert build_task(on_fixture(f"{name}:{form}")).load_instances()


def test_a_task_file_extends_another_and_sets_only_what_differs():
    easy, challenge = compose_task("arc_easy"), compose_task("arc_challenge")
    assert challenge.name == "arc_challenge" and challenge.data.subset == "ARC-Challenge"
    assert challenge.scoring.normalization == "uncond" and easy.scoring.normalization == "per_char"
    assert challenge.prompt.fewshot.curated[0]["id"] == "Mercury_SC_415702"  # its own shots replace the list
    assert challenge.dataset.fields == easy.dataset.fields and challenge.data.path == easy.data.path
    assert build_task(challenge).task_hash != build_task(easy).task_hash
