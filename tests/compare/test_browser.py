"""End to end in headless Chromium (Debian's, driven by Playwright) against the loopback viewer."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.compare import build_series, compare_runs, find_run_dirs, load_run
from engine.compare.server import ViewerState, start_in_thread

from .conftest import make_suite_pair

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = not Path(CHROMIUM).exists() or shutil.which("chromium") is None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = True
    if missing:
        if os.environ.get("CI"):
            pytest.fail("browser tests need Debian chromium and playwright: run scripts/ci/setup_browser.sh")
        pytest.skip("chromium or playwright missing (scripts/ci/setup_browser.sh installs them)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object, object]]:
    pair = make_suite_pair(tmp_path_factory.mktemp("viewer"))
    cmp = compare_runs([load_run(d) for d in find_run_dirs(pair.job_a)], [load_run(d) for d in find_run_dirs(pair.job_b)])
    server, url = start_in_thread(ViewerState(comparison=cmp))
    yield url, cmp, pair
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(browser, viewer) -> Iterator[object]:
    pg = browser.new_page(viewport={"width": 1500, "height": 950})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(viewer[0])
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    yield pg
    pg.close()
    assert not errors, errors


def _wait_loaded(pg, before: str | None) -> None:
    pg.wait_for_function("(b) => document.body.dataset.loaded && document.body.dataset.loaded !== b", arg=before, timeout=10000)


def test_overview_numbers(page, viewer, artifacts_dir: Path) -> None:
    _, cmp, _ = viewer
    for i, t in enumerate(cmp.report.tasks):
        row = page.locator(f"#overview-table tr[data-task='{i}']")
        assert row.locator("td.delta").inner_text() == f"{t.stats.delta:+.4f}"
        assert row.locator("td.mde").inner_text() == f"{t.stats.mde:.4f}"
        assert row.locator("td.n").inner_text() == str(t.stats.n)
        assert row.locator(".badge").get_attribute("data-verdict") == t.verdict
    suite = page.locator("#overview-table tr.suite")
    assert suite.locator("td.delta").inner_text() == f"{cmp.report.suite.delta:+.4f}"
    assert "only in A" in page.locator("#notes").inner_text()
    # The forest plot: one row per task, then the suite; each point at its Δ, coloured by its verdict.
    rows = page.locator("#forest-svg g.forest-row")
    assert rows.count() == len(cmp.report.tasks) + 1
    shown = rows.evaluate_all("gs => gs.map(g => [g.dataset.taskSpec, Number(g.dataset.delta), g.dataset.verdict])")
    expected = [(t.task_spec, t.stats.delta, t.verdict) for t in cmp.report.tasks]
    expected.append((f"suite {cmp.report.suite.name}", cmp.report.suite.delta, cmp.report.suite.verdict))
    assert [(s, pytest.approx(d), v) for s, d, v in expected] == [tuple(x) for x in shown]
    assert page.locator("#forest-svg g.forest-row line.ci").count() == len(expected)
    assert page.locator("#forest-svg g.forest-row rect.mde-band").count() == len(expected)
    page.screenshot(path=str(artifacts_dir / "overview.png"), full_page=True)


def test_filter_search_sort_and_open_question(page, viewer, artifacts_dir: Path) -> None:
    _, cmp, _ = viewer
    t = cmp.table
    mmlu = t.task_specs.index("mmlu:mc")
    before = page.evaluate("document.body.dataset.loaded || ''")
    page.click(f"#overview-table tr[data-task='{mmlu}']")
    _wait_loaded(page, before)
    before = page.evaluate("document.body.dataset.loaded")
    page.select_option("#filter", "regressed")
    _wait_loaded(page, before)
    losses = cmp.report.tasks[mmlu].stats.losses
    assert page.locator("#page-info").get_attribute("data-total") == str(losses)
    statuses = page.locator("#questions-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.status)")
    assert statuses and set(statuses) == {"regressed"}
    page.screenshot(path=str(artifacts_dir / "filter_regressed.png"), full_page=True)

    # Open the first regressed question and read the numbers shown against the records.
    page.locator("#questions-table tbody tr").first.click()
    page.wait_for_selector("#detail:not([hidden]) #detail-score-a")
    iid = page.locator("#questions-table tbody tr").first.locator("td.iid").inner_text()
    i = next(k for k in range(len(t)) if t.ids[k] == iid and t.task_idx[k] == mmlu)
    assert page.locator("#detail-score-a").inner_text() == f"{t.score_a[i]:.4f}" == "0.0000"
    assert page.locator("#detail-score-b").inner_text() == f"{t.score_b[i]:.4f}" == "1.0000"
    assert page.locator("#detail-delta").inner_text() == "-1.0000"
    lp_a = t.qa[i].first["logprobs"]
    shown = page.locator("#choice-logprobs td.lp-a").all_inner_texts()
    assert shown == [f"{x:.3f}" for x in lp_a]
    assert page.locator("#detail-gold").inner_text() == f'"{t.qa[i].first["gold"]}"'
    assert iid in page.locator("#detail-prompt").inner_text()
    page.screenshot(path=str(artifacts_dir / "question_detail.png"), full_page=True)

    # Text search, then sort by Δ descending.
    before = page.evaluate("document.body.dataset.loaded")
    page.select_option("#filter", "all")
    _wait_loaded(page, before)
    before = page.evaluate("document.body.dataset.loaded")
    page.fill("#search", "q000007")
    _wait_loaded(page, before)
    assert page.locator("#questions-table tbody tr td.iid").all_inner_texts() == ["q000007"]
    page.locator("#questions-table tbody tr").first.click()  # has a trajectory in A
    page.wait_for_selector("#side-a .traj")
    assert "tool_call" in page.locator("#side-a .traj").inner_text()
    page.screenshot(path=str(artifacts_dir / "question_trajectory.png"), full_page=True)
    before = page.evaluate("document.body.dataset.loaded")
    page.fill("#search", "")
    page.select_option("#sort", "-delta")
    _wait_loaded(page, before)
    first = page.locator("#questions-table tbody tr").first
    assert first.get_attribute("data-status") == "improved"


def test_pagination_and_csv(page, viewer) -> None:
    url, cmp, _ = viewer
    before = page.evaluate("document.body.dataset.loaded || ''")
    page.click("#tab-questions")
    _wait_loaded(page, before)
    before = page.evaluate("document.body.dataset.loaded")
    page.select_option("#per-page", "25")
    _wait_loaded(page, before)
    total = len(cmp.table)
    assert page.locator("#page-info").inner_text() == f"page 1 of {-(-total // 25)} · {total} questions"
    before = page.evaluate("document.body.dataset.loaded")
    page.click("#next")
    _wait_loaded(page, before)
    assert page.locator("#page-info").inner_text().startswith("page 2 of")
    assert page.locator("#questions-table tbody tr td.iid").first.inner_text() == cmp.table.ids[25]
    href = page.locator("#export-questions").get_attribute("href")
    body = page.request.get(url.rstrip("/") + href).text()
    assert body.count("\n") == total + 1


def test_series_chart(browser, tmp_path: Path, artifacts_dir: Path) -> None:
    pair = make_suite_pair(tmp_path)
    from engine.compare.synthetic import write_run

    write_run(tmp_path / "runs" / "step40" / "mmlu__mc", task_spec="mmlu:mc", correct=pair.mmlu_a[::-1], model="smol-ft", step=40, suite="core")
    series = build_series([load_run(d) for d in find_run_dirs(tmp_path / "runs")])
    server, url = start_in_thread(ViewerState(series=series))
    try:
        pg = browser.new_page(viewport={"width": 1100, "height": 700})
        pg.goto(url)
        pg.wait_for_selector("body[data-ready='1']")
        assert pg.locator("#series").is_visible() and not pg.locator("#tab-overview").is_visible()
        chart = pg.locator("svg[data-task='mmlu:mc']")
        assert chart.locator("polygon.ci-band").count() == 1
        assert chart.locator("line.mde-line").count() == 2
        steps = chart.locator("circle.point").evaluate_all("cs => cs.map(c => c.dataset.step)")
        assert steps == ["0", "20", "40"]
        mmlu = next(t for t in series.tasks if t.task_spec == "mmlu:mc")
        values = chart.locator("circle.point").evaluate_all("cs => cs.map(c => Number(c.dataset.value))")
        assert values == pytest.approx([p.value for p in mmlu.points])
        # The sweep heatmap: a row per task, a cell per (task, checkpoint); grey when not significant.
        steps_all = sorted({p.step for t in series.tasks for p in t.points})
        heat = pg.locator("#heatmap-svg")
        assert heat.locator("g.heat-row").count() == len(series.tasks) == 2
        assert heat.locator("rect.heat-cell").count() == len(series.tasks) * len(steps_all) == 6
        assert heat.locator("rect.heat-cell.base").count() == 2 and heat.locator("rect.heat-cell.missing").count() == 1
        cells = heat.locator("rect.heat-cell[data-delta]").evaluate_all(
            "rs => rs.map(r => [r.dataset.taskSpec, Number(r.dataset.step), Number(r.dataset.delta), r.classList.contains('sig')])")
        want = [[t.task_spec, p.step, p.delta_vs_base, p.verdict_vs_base in ("improved", "regressed")]
                for t in series.tasks for p in t.points[1:]]
        assert [[c[0], c[1], pytest.approx(c[2]), c[3]] for c in cells] == want
        assert pg.locator("#series-forest-svg g.forest-row").count() == len(series.tasks)
        pg.screenshot(path=str(artifacts_dir / "series.png"), full_page=True)
        pg.close()
    finally:
        server.shutdown()
        server.server_close()
