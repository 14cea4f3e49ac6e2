"""Instance: one evaluated question, normalized from a dataset row by the task's field map."""

from __future__ import annotations

import string
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config.schema import FieldMap

LETTERS = string.ascii_uppercase


class Instance(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    query: str
    choices: tuple[str, ...] | None = None
    gold: int | str | None = None  # choice index for choice tasks, answer text for generation
    cluster: str | None = None
    row: dict[str, Any] = {}

    @property
    def gold_text(self) -> str | None:
        if self.choices is not None and isinstance(self.gold, int):
            return self.choices[self.gold]
        return None if self.gold is None else str(self.gold)


class FieldMapError(ValueError):
    pass


def render_template(template: str, row: dict[str, Any], where: str) -> str:
    try:
        return template.format(**row)
    except KeyError as err:
        raise FieldMapError(
            f"{where} template {template!r} names column {err} which the data does not have; "
            f"columns are {sorted(row)}. Fix the task's `fields` mapping."
        ) from None


def _choices(row: dict[str, Any], spec: str | list[str]) -> tuple[str, ...]:
    if isinstance(spec, str):
        value = row.get(spec)
        if not isinstance(value, (list, tuple)):
            raise FieldMapError(
                f"`fields.choices: {spec}` must name a column holding a list; got {type(value).__name__}. "
                "Fix: give a list of columns instead, e.g. `choices: [answer_a, answer_b]`."
            )
        return tuple(str(v) for v in value)
    missing = [c for c in spec if c not in row]
    if missing:
        raise FieldMapError(f"`fields.choices` names columns {missing} missing from the data ({sorted(row)}).")
    return tuple(str(row[c]) for c in spec)


def _gold_index(value: Any, choices: tuple[str, ...]) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        idx = value
    elif isinstance(value, str) and value.strip().isdigit():
        idx = int(value.strip())
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        idx = LETTERS.index(value.strip().upper())
    elif isinstance(value, str) and value in choices:
        idx = choices.index(value)
    else:
        raise FieldMapError(f"gold value {value!r} is neither an index, a letter nor one of the choices")
    if not 0 <= idx < len(choices):
        raise FieldMapError(f"gold index {idx} is out of range for {len(choices)} choices")
    return idx


def row_to_instance(row: dict[str, Any], index: int, fields: FieldMap) -> Instance:
    choices = _choices(row, fields.choices) if fields.choices is not None else None
    gold: int | str | None = None
    if fields.gold is not None:
        if fields.gold not in row:
            raise FieldMapError(f"`fields.gold: {fields.gold}` is not a column of the data ({sorted(row)}).")
        raw = row[fields.gold]
        gold = _gold_index(raw, choices) if choices is not None else str(raw)
    ident = str(row[fields.id]) if fields.id and fields.id in row else str(index)
    return Instance(
        id=ident,
        query=render_template(fields.query, row, "`fields.query`"),
        choices=choices,
        gold=gold,
        cluster=str(row[fields.cluster]) if fields.cluster and fields.cluster in row else None,
        row=row,
    )


def rows_to_instances(rows: list[dict[str, Any]], fields: FieldMap) -> list[Instance]:
    return [row_to_instance(r, i, fields) for i, r in enumerate(rows)]
