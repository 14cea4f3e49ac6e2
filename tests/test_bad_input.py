"""Bad input is refused up front: exit 2, one paragraph naming the key and the fix, no traceback.

Each case runs `python -m engine` with `inspect=true`, so no model ever runs: the refusal comes from
validation (or from loading the data), before any request.
"""

from __future__ import annotations

import pytest

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
        (["task=freshqa", "task.scorers=[contans]"], ["unknown scorer 'contans'", "did you mean 'contains'", "relaxed_match"]),
        (["task.primary_metric=accuracy"], ["`task.primary_metric` is 'accuracy'", "did you mean 'acc'", "produces only acc"]),
        # the cot variant makes MMLU a generation task, which writes exact_match, not acc
        (["variant=cot"], ["`task.primary_metric` is 'acc'", "formulation generate", "exact_match"]),
        (["suite=base_qa", "suite.tasks=[mmlu::rc,gsm8k]"], ["'mmlu::rc' has an empty part", "task:variant"]),
        (["suite=base_qa", "suite.tasks=[':rc']"], ["':rc' has an empty part"]),
        (["task.fields.query='{question'"], ["`task.fields.query` template '{question'", "close every `{`"]),
        (["+task.mc_template='{query} {foo}'"], ["`task.mc_template`", "`{foo}`", "task.fields.query"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and "=" in v[0] else None,
)
def test_bad_setting_is_refused_before_running(args, needles, workdir):
    assert_refused(run_engine([*args, "inspect=true", "tracking=none"], workdir, timeout=300), *needles)


def test_valid_settings_still_run(workdir):
    res = run_engine(["task=freshqa", "variant=judge", "inspect=true", "limit=1", "tracking=none"], workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "=== freshqa:judge" in res.stdout
