"""Field mapping, few-shot selection, formulations and scoring on real wheel data (no model)."""

from __future__ import annotations

import math

import pytest

from engine.config.compose import compose_task, parse_task_spec
from engine.config.errors import ConfigError
from engine.config.schema import FieldMap
from engine.scoring import score_response
from engine.scoring.scorers import relaxed_match
from engine.tasks import build_task
from engine.tasks.extract import gsm8k_answer, normalize_number
from engine.tasks.fewshot import select_fewshot
from engine.tasks.instance import FieldMapError, row_to_instance
from engine.types import GenerateRequest, GenerateResponse, LoglikelihoodRequest, LoglikelihoodResponse


def test_variants_merge_into_the_task_and_spec_means_overrides():
    base = compose_task("mmlu")
    rc3 = compose_task("mmlu:rc:3shot")
    assert (base.formulation, base.prompt.num_fewshot) == ("mc", 0)
    assert (rc3.formulation, rc3.prompt.num_fewshot, rc3.scoring.normalization) == ("rc", 3, "per_char")
    assert rc3.variants == ["rc", "3shot"]
    assert build_task(base).task_hash != build_task(rc3).task_hash


def test_unknown_spec_names_suggest_closest():
    with pytest.raises(ConfigError, match="Did you mean 'mmlu'"):
        parse_task_spec("mmlx:rc")
    with pytest.raises(ConfigError, match="'3shot'"):
        parse_task_spec("mmlu:3shoot")


def test_mmlu_loads_real_rows_drops_header_rows_and_samples_1000():
    task = build_task(compose_task("mmlu"))
    instances = task.load_instances()
    assert len(instances) == 1000  # OLMES: 1,000 sampled when the split has more than 1,500
    assert all(i.gold in (0, 1, 2, 3) for i in instances)
    assert len({i.cluster for i in instances}) > 40
    again = build_task(compose_task("mmlu")).load_instances()
    assert [i.id for i in again] == [i.id for i in instances]  # seeded


def test_fewshot_excludes_the_instance_and_prefers_its_subject():
    task = build_task(compose_task("mmlu:5shot"))
    inst = task.load_instances()[0]
    shots = task.fewshot_for(inst)
    assert len(shots) == 5
    assert all(s.id != inst.id and s.query != inst.query for s in shots)
    assert all(s.cluster == inst.cluster for s in shots)
    assert [s.id for s in shots] == [s.id for s in task.fewshot_for(inst)]  # deterministic


def test_select_fewshot_never_returns_the_instance():
    pool = [row_to_instance({"question": f"q{i}"}, i, FieldMap()) for i in range(5)]
    for inst in pool:
        shots = select_fewshot(inst, pool, 4, seed=1)
        assert inst.id not in {s.id for s in shots} and len(shots) == 4


def _plain_select(instance, pool, k, *, seed, curated=(), same_cluster=False, fixed=False):
    """The selection as plain scans of the pool (the definition the indexed version must match)."""
    import random

    if k <= 0:
        return []
    chosen = [c for c in curated if c.query != instance.query][:k]
    if len(chosen) == k:
        return chosen
    taken = {c.query for c in chosen} | {instance.query}
    candidates = [p for p in pool if p.query not in taken]
    if same_cluster and instance.cluster is not None:
        in_cluster = [p for p in candidates if p.cluster == instance.cluster]
        if len(in_cluster) >= k - len(chosen):
            candidates = in_cluster
    need = min(k - len(chosen), len(candidates))
    if fixed:
        base = [p for p in pool if p.query not in {c.query for c in chosen}]
        if same_cluster and instance.cluster is not None:
            base = [p for p in base if p.cluster == instance.cluster] or base
        rng = random.Random(f"{seed}:{instance.cluster}" if same_cluster else seed)
        drawn = rng.sample(base, min(need + 1, len(base)))
        return chosen + [p for p in drawn if p.query != instance.query][:need]
    rng = random.Random(f"{seed}:{instance.id}")
    return chosen + rng.sample(candidates, need)


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("same_cluster", [False, True])
def test_indexed_fewshot_selection_equals_plain_scans(fixed, same_cluster):
    """Clusters of 1-6 rows (some too small for k), repeated queries, curated rows, rows without a
    cluster, instances outside the pool: the same shots, in the same order, as the plain scans."""
    import random

    rng = random.Random(7)
    fields = FieldMap(cluster="subject")
    pool = [row_to_instance({"question": f"q{rng.randrange(60)}", "subject": f"s{rng.randrange(12)}"}
                            if i % 9 else {"question": f"q{i}"}, i, fields) for i in range(90)]
    outside = [row_to_instance({"question": f"q{i}", "subject": f"s{i % 14}"}, i, fields) for i in range(40)]
    curated = [pool[3], row_to_instance({"question": "curated"}, 0, FieldMap())]
    for inst in pool + outside:
        for k, cur in ((0, ()), (2, ()), (5, ()), (5, curated), (1, curated)):
            for seed in (1, 1234):
                got = select_fewshot(inst, pool, k, seed=seed, curated=cur, same_cluster=same_cluster, fixed=fixed)
                want = _plain_select(inst, pool, k, seed=seed, curated=cur, same_cluster=same_cluster, fixed=fixed)
                assert [(s.id, s.query) for s in got] == [(s.id, s.query) for s in want]


def test_mc_and_rc_requests_and_scoring():
    mc = build_task(compose_task("truthfulqa_mc1"))
    inst = mc.load_instances()[0]
    req = mc.build_request(inst)
    assert isinstance(req, LoglikelihoodRequest)
    assert req.continuations[:2] == (" A", " B") and "\n A. " in req.context and req.context.endswith("Answer:")
    n = len(req.continuations)
    lps = tuple(-5.0 for _ in range(n))
    good = tuple(-1.0 if i == inst.gold else -5.0 for i in range(n))
    scores, pred = score_response(mc, inst, LoglikelihoodResponse(logprobs=good, token_counts=(1,) * n, is_greedy=(False,) * n))
    assert scores["acc"] == 1.0 and pred == inst.gold
    assert scores["logprob_margin"] == 4.0  # gold -1.0 against the best other, -5.0
    scores, _ = score_response(mc, inst, LoglikelihoodResponse(logprobs=lps[:-1] + (-0.5,), token_counts=(1,) * n, is_greedy=(False,) * n))
    assert scores["acc"] == float(inst.gold == n - 1)

    rc = build_task(compose_task("hellaswag"))
    h = rc.load_instances()[0]
    hreq = rc.build_request(h)
    assert hreq.continuations == tuple(" " + e for e in h.choices)
    assert hreq.context.startswith(h.row["activity_label"] + ": ")
    # per_char normalization prefers the shorter ending at equal total logprob
    lens = [len(c) for c in hreq.continuations]
    resp = LoglikelihoodResponse(logprobs=(-10.0,) * 4, token_counts=(3,) * 4, is_greedy=(False,) * 4)
    scores, pred = score_response(rc, h, resp)
    assert pred == lens.index(max(lens))
    # the margin under the normalization that ranks the choices (per character here), by hand
    per_char = [-10.0 / (len(c) - 1) for c in hreq.continuations]  # the separator space is not counted
    assert scores["logprob_margin"] == pytest.approx(per_char[h.gold] - max(x for i, x in enumerate(per_char) if i != h.gold))
    assert scores["bpb"] == pytest.approx(10 / (len(hreq.continuations[h.gold].encode()) * math.log(2)))


def test_gsm8k_generation_and_extraction():
    task = build_task(compose_task("gsm8k:3shot"))
    inst = task.load_instances()[0]
    req = task.build_request(inst)
    assert isinstance(req, GenerateRequest)
    assert len(req.messages) == 7  # 3 curated shots × 2 + the question
    assert req.messages[1].content.endswith("The answer is 6.")
    ok, _ = score_response(task, inst, GenerateResponse(text=f"Some steps. The answer is {inst.gold}."))
    bad, extracted = score_response(task, inst, GenerateResponse(text="The answer is 123456."))
    assert ok["exact_match"] == 1.0 and bad["exact_match"] == 0.0 and extracted == "123456"
    assert gsm8k_answer("so 1,234 apples\n#### 1,234") == "1234"
    assert gsm8k_answer("The answer is $18.00.") == "18"
    # hostile or odd answers are scored, never a crash, and compared on their digits exactly
    huge = "9" * 400
    wrong, extracted = score_response(task, inst, GenerateResponse(text=f"#### {huge}"))
    assert wrong["exact_match"] == 0.0 and extracted == huge
    assert normalize_number("12345678901234567891") != normalize_number("12345678901234567890")
    assert [normalize_number(t) for t in ("1,000.50", "007", "-0.0", ".5", "5.", "-.50", "nan", "1.2.3")] == [
        "1000.5", "7", "0", "0.5", "5", "-0.5", "nan", "1.2.3"]
    assert relaxed_match("about nan", ["nan"]) and not relaxed_match("it is 12345678901234567891", ["12345678901234567890"])


def test_field_map_errors_name_the_columns():
    with pytest.raises(FieldMapError, match="columns are"):
        row_to_instance({"q": "x"}, 0, FieldMap(query="{question}"))


def test_unreachable_hub_fails_fast_with_a_fix(monkeypatch):
    import time

    from engine.config.schema import DataConfig
    from engine.data import source

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens: refused at once
    source.hub_reachable.cache_clear()
    start = time.monotonic()
    with pytest.raises(source.DataLoadError, match="unreachable.*task.data.data_files"):
        source.load_rows(DataConfig(path="someone/absent_dataset_xyz", split="test"))
    assert time.monotonic() - start < 15
    source.hub_reachable.cache_clear()
