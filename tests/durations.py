"""Longest modules first, so that the xdist workers finish together (docs/architecture.md, "Tests").

xdist hands tests out in collection order; a 3-minute module collected last leaves one worker
running it alone at the end. `tests/durations.json` holds each test's measured seconds (setup +
call + teardown); modules are ordered by their total, tests keep their order inside a module (so
module-scoped fixtures are still set up once per worker). Refresh it after adding slow tests:
`EVALBENCH_WRITE_DURATIONS=1 make test` (the controller merges what it measured into the file).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN_SLOW_S = 30.0  # a slow test not measured yet: schedule it early rather than last
UNKNOWN_FAST_S = 0.5


def _known() -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(DURATIONS.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def order_longest_modules_first(items: list[pytest.Item]) -> None:
    known = _known()
    totals: dict[str, float] = defaultdict(float)
    for item in items:
        guess = UNKNOWN_SLOW_S if item.get_closest_marker("slow") else UNKNOWN_FAST_S
        totals[_module(item.nodeid)] += known.get(item.nodeid, guess)
    first_seen = {m: i for i, m in reversed(list(enumerate(_module(it.nodeid) for it in items)))}
    items.sort(key=lambda it: (-totals[_module(it.nodeid)], first_seen[_module(it.nodeid)]))


class DurationRecorder:
    """Sums each test's phases on the xdist controller (or a plain run) and merges them into the file."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration
        if report.when == "teardown" and len(self.seconds) % 25 == 0:
            self.write()  # as it goes: a run cut short still leaves what it measured

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.write()

    def write(self) -> None:
        if not self.seconds:
            return
        merged = {**_known(), **{k: round(v, 2) for k, v in self.seconds.items()}}
        DURATIONS.write_text(json.dumps(dict(sorted(merged.items())), indent=0) + "\n")


def register(config: pytest.Config) -> None:
    is_worker = hasattr(config, "workerinput")
    if os.environ.get("EVALBENCH_WRITE_DURATIONS") and not is_worker:
        config.pluginmanager.register(DurationRecorder(), "evalbench-durations")
