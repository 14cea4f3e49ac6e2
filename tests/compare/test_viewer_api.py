"""The viewer's JSON API and the question query (filters, search, sort, pages) without a browser."""

from __future__ import annotations

import csv
import io
import json
import urllib.request

import numpy as np
import pytest

from engine.compare import compare_runs, find_run_dirs, load_run
from engine.compare.query import QueryIndex
from engine.compare.series import build_series
from engine.compare.server import ViewerState, start_in_thread

from .conftest import SuitePair


@pytest.fixture
def comparison(suite_pair: SuitePair):
    return compare_runs([load_run(d) for d in find_run_dirs(suite_pair.job_a)], [load_run(d) for d in find_run_dirs(suite_pair.job_b)])


def test_filters_sort_search_pages(comparison) -> None:
    t = comparison.table
    qi = QueryIndex(t)
    mmlu = t.task_specs.index("mmlu:mc")
    reg = qi.select(mmlu, "regressed")
    assert reg.size == comparison.report.tasks[mmlu].stats.losses
    assert all(t.delta[i] < 0 for i in reg)
    imp = qi.select(None, "improved")
    assert imp.size == sum(x.stats.wins for x in comparison.report.tasks)
    bw, br = qi.select(mmlu, "both_wrong"), qi.select(mmlu, "both_right")
    assert all(t.score_a[i] == 0 == t.score_b[i] for i in bw) and all(t.score_a[i] == 1 == t.score_b[i] for i in br)
    s = comparison.report.tasks[mmlu].stats
    assert reg.size + qi.select(mmlu, "improved").size + bw.size + br.size == s.n
    assert qi.select(mmlu, "unpaired").size == 8
    srt = qi.select(None, "all", sort="-delta")
    d = t.delta[srt]
    finite = d[~np.isnan(d)]
    assert (np.diff(finite) <= 0).all() and np.isnan(d[-1])  # unpaired rows last
    hit = qi.select(None, "all", q="Q000042")  # case-insensitive, matches id and prompt
    assert [t.ids[i] for i in hit] == ["q000042", "q000042"]  # in both tasks
    page = qi.page(qi.select(None), page=3, per_page=25)
    assert page.page == 3 and len(page.rows) == 25 and page.pages == -(-len(t) // 25)
    assert qi.page(qi.select(None), page=999, per_page=25).page == page.pages
    with pytest.raises(ValueError):
        qi.select(None, "sideways")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_http_api(comparison, suite_pair: SuitePair) -> None:
    server, url = start_in_thread(ViewerState(comparison=comparison))
    try:
        assert url.startswith("http://127.0.0.1:")
        assert b"evalbench compare" in _get(url)
        ov = json.loads(_get(url + "api/overview"))
        assert ov["mode"] == "compare" and len(ov["report"]["tasks"]) == 2
        page = json.loads(_get(url + "api/questions?task=0&filter=regressed&per_page=5"))
        assert page["total"] == comparison.report.tasks[0].stats.losses and len(page["rows"]) <= 5
        row = page["rows"][0]
        detail = json.loads(_get(url + f"api/question?row={row['row']}"))
        assert detail["instance_id"] == row["instance_id"] and detail["a"]["samples"][0]["logprobs"]
        rows = list(csv.DictReader(io.StringIO(_get(url + "export/questions.csv?task=0&filter=regressed").decode())))
        assert len(rows) == page["total"]
        assert _get(url + "export/overview.csv").startswith(b"level,task_spec")
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(url + "api/questions?filter=bogus")
        assert e.value.code == 400
    finally:
        server.shutdown()
        server.server_close()


def test_series_api(suite_pair: SuitePair) -> None:
    runs = [load_run(d) for d in find_run_dirs(suite_pair.root)]
    series = build_series(runs)
    server, url = start_in_thread(ViewerState(series=series))
    try:
        ov = json.loads(_get(url + "api/overview"))
        assert ov["mode"] == "series" and [t["task_spec"] for t in ov["series"]["tasks"]] == ["arc:mc", "mmlu:mc"]
        assert _get(url + "export/series.csv").count(b"\n") == 5
    finally:
        server.shutdown()
        server.server_close()
