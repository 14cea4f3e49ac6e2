"""Instance: one evaluated question, normalized from a dataset row by the task's field map."""

from __future__ import annotations

import random
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


_MISSING = object()


def get_path(row: dict[str, Any], path: str, default: Any = _MISSING) -> Any:
    """`row["choices"]["text"]` for the dotted path `choices.text` (a plain column otherwise)."""
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif default is not _MISSING:
            return default
        else:
            raise FieldMapError(f"column path `{path}` is not in the data; columns are {sorted(row)}.")
    return value


def _choices(row: dict[str, Any], spec: str | list[str]) -> tuple[str, ...]:
    if isinstance(spec, str):
        value = get_path(row, spec, None)
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


def _gold_index(
    value: Any,
    choices: tuple[str, ...],
    labels: tuple[str, ...] | None = None,
    gold_map: dict[str, int] | None = None,
    gold_is: str = "auto",
) -> int:
    if gold_is == "text":
        if str(value) not in choices:
            raise FieldMapError(f"gold value {value!r} is not one of the choices {list(choices)}")
        return choices.index(str(value))
    if gold_map:
        key = str(value)
        if key not in gold_map:
            raise FieldMapError(f"gold value {value!r} is not a key of `fields.gold_map` {gold_map}")
        return gold_map[key]
    if labels is not None and str(value).strip() in labels:
        return labels.index(str(value).strip())
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
    if fields.fixed_choices is not None:
        choices: tuple[str, ...] | None = tuple(fields.fixed_choices)
    else:
        choices = _choices(row, fields.choices) if fields.choices is not None else None
    labels = None
    if fields.choice_labels is not None:
        labels = tuple(str(v).strip() for v in get_path(row, fields.choice_labels))
    gold: int | str | None = None
    if fields.gold is not None:
        raw = get_path(row, fields.gold, _MISSING) if "." in fields.gold else row.get(fields.gold, _MISSING)
        if raw is _MISSING:
            raise FieldMapError(f"`fields.gold: {fields.gold}` is not a column of the data ({sorted(row)}).")
        gold = _gold_index(raw, choices, labels, fields.gold_map, fields.gold_is) if choices is not None else str(raw)
    ident = str(row[fields.id]) if fields.id and fields.id in row else str(index)
    query = render_template(fields.query, row, "`fields.query`")
    if fields.shuffle_choices and choices is not None:
        order = list(range(len(choices)))
        random.Random(query).shuffle(order)  # deterministic per question, independent of row order
        choices = tuple(choices[i] for i in order)
        if isinstance(gold, int):
            gold = order.index(gold)
    return Instance(
        id=ident,
        query=query,
        choices=choices,
        gold=gold,
        cluster=str(row[fields.cluster]) if fields.cluster and fields.cluster in row else None,
        row=row,
    )


def rows_to_instances(rows: list[dict[str, Any]], fields: FieldMap) -> list[Instance]:
    return [row_to_instance(r, i, fields) for i, r in enumerate(rows)]
