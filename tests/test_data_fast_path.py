"""Plain local JSON Lines are read without `datasets` (start-up, evalbench issue 13), with exactly
the rows `datasets` gives; anything it could type differently is left to `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from engine.config.schema import DataConfig
from engine.data.source import _plain_json_lines, _resolve_files, load_rows

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _by_datasets(files: str) -> list[dict]:
    return [dict(r) for r in datasets.load_dataset("json", data_files=files, split="train")]


@pytest.mark.parametrize("name", ["plain", "shipped"])
def test_plain_json_lines_are_the_rows_datasets_gives(tmp_path, name):
    if name == "shipped":
        files = str(ROOT / "data/freshqa/freshqa.jsonl")
    else:
        files = _write(tmp_path / "rows.jsonl", [
            {"id": f"q{i}", "n": i, "x": i / 3, "ok": i % 2 == 0, "tags": ["a", str(i)], "note": None if i else "x"}
            for i in range(5)])
    cfg = DataConfig(path="json", data_files=files, split="train")
    fast = _plain_json_lines(cfg, _resolve_files(files), "train")
    assert fast is not None and fast == _by_datasets(files)
    assert load_rows(cfg) == fast


@pytest.mark.parametrize("rows", [
    [{"a": 1}, {"a": 2.5}],  # int and float in one column: datasets makes both floats
    [{"a": 1}, {"b": 2}],  # different keys: datasets fills the gaps with None
    [{"a": {"b": 1}}, {"a": {"c": 2}}],  # nested objects: datasets unifies their fields
], ids=["int-float", "keys", "nested"])
def test_anything_datasets_types_differently_is_left_to_datasets(tmp_path, rows):
    files = _write(tmp_path / "rows.jsonl", rows)
    cfg = DataConfig(path="json", data_files=files, split="train")
    assert _plain_json_lines(cfg, _resolve_files(files), "train") is None
    assert load_rows(cfg) == _by_datasets(files)
