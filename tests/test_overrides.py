"""The command line read once with Hydra's override parser (engine/config/overrides.py), prepared once
(engine/config/prepare.py), and the sweep's jobs built from the typed value (engine/sweep.py);
docs/architecture.md, "The flow of one run". Fast: no model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import split_flags
from engine.config.errors import ConfigError
from engine.config.overrides import ParsedOverrides, parse_override, quote
from engine.config.prepare import prepare
from engine.sweep import sweep_jobs


def test_each_override_is_typed_by_hydras_grammar() -> None:
    spec, listed, removed, added, swept = ParsedOverrides.parse(
        ["task=mmlu:rc", "variant=[rc,5shot]", "~task", "+model.api_base=http://x:1/v1", "task=[a,b:rc],[c]"])
    assert (spec.key, spec.kind, spec.value, spec.plain, spec.is_list) == ("task", "assign", "mmlu:rc", "mmlu:rc", False)
    assert listed.names == ("rc", "5shot") and listed.is_list and listed.plain is None
    assert (removed.key, removed.kind, removed.value, removed.names) == ("task", "delete", None, ())
    assert (added.key, added.kind, added.plain) == ("model.api_base", "add", "http://x:1/v1")
    assert swept.sweep == ("[a,b\\:rc]", "[c]") and [c.names for c in swept.choices] == [("a", "b:rc"), ("c",)]
    assert parse_override("seed=range(1,3)").sweep == ("1", "2")


def test_a_quoted_value_round_trips() -> None:
    path = "/tmp/it's a [folder]:1,2"
    assert parse_override(f"output_dir={quote(path)}").plain == path


@pytest.mark.parametrize("text", ["task=[mmlu", "limit", "a=b)"])
def test_text_the_grammar_refuses_is_one_paragraph_with_the_fix(text: str) -> None:
    with pytest.raises(ConfigError, match=r"Cannot read the override .*Fix: write `key=value`") as err:
        ParsedOverrides.parse([text])
    assert "\n" not in str(err.value) and "hydra.cc" not in str(err.value)


def test_a_list_valued_sweep_is_read_whole() -> None:
    """`imports=[],[x]` was split by hand into the module name `[x` (exit 2 for a valid command line)."""
    jobs = sweep_jobs(prepare(["imports=[],[json]", "limit=1"]))
    assert [job.last("imports").names for job in jobs] == [(), ("json",)]  # type: ignore[union-attr]


def test_prepared_overrides_are_not_prepared_again() -> None:
    once = prepare(["task=mmlu:rc:5shot", "limit=2"])
    assert once.expanded and once.strings() == ["task=mmlu", "limit=2", "variant=[rc,5shot]"]
    assert prepare(once) is once


def test_flags_and_their_values_are_split_from_the_overrides() -> None:
    assert split_flags(["-m", "task=a,b", "--cfg", "job", "-p", "hydra.launcher", "--info", "searchpath", "x=1"]) == (
        ["-m", "--cfg", "job", "-p", "hydra.launcher", "--info", "searchpath"], ["task=a,b", "x=1"])


def test_a_bad_override_on_the_command_line_exits_2_without_a_traceback(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "engine", "task=[mmlu", "limit=1"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: Cannot read the override `task=[mmlu`") and res.stderr.count("\n") == 1
