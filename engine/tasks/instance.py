"""Instance: one evaluated question, normalized from a dataset row by the task's field map."""

from __future__ import annotations

import math
import random
import string
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config.errors import ConfigError
from engine.config.schema import FieldMap
from engine.config.templates import TemplateError, is_jinja, render_jinja

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
    """A `{column}` format template, or a Jinja one (`{{ column.strip() }}`, engine/config/templates.py)."""
    if is_jinja(template):
        try:
            return render_jinja(template, row, where)
        except TemplateError as err:
            raise FieldMapError(f"{err}.") from None
    try:
        return template.format(**row)
    except KeyError as err:
        raise FieldMapError(
            f"{where} template {template!r} names column {err} which the data does not have; "
            f"columns are {sorted(row)}. Fix the task's `fields` mapping."
        ) from None
    except (ValueError, IndexError, AttributeError, TypeError) as err:  # unclosed brace, `{}`, `{a.b}` on a str
        raise FieldMapError(
            f"{where} template {template!r} cannot be rendered ({err}). Fix the template: name columns as "
            "`{column}`, close every `{` with `}`; for a literal brace write the template in Jinja "
            "(`{{ column }}`), where a single brace is plain text."
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
            raise FieldMapError(f"column path `{path}` is not in the data; columns are {sorted(row)}. Fix: point `task.fields` at one of those columns, or `task.data.data_files` at data that has it.")
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
        raise FieldMapError(f"`fields.choices` names columns {missing} missing from the data ({sorted(row)}). Fix: point `task.fields` at one of those columns, or `task.data.data_files` at data that has it.")
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
    ident = str(row[fields.id]) if fields.id and fields.id in row else str(index)
    if fields.fixed_choices is not None:
        choices: tuple[str, ...] | None = tuple(fields.fixed_choices)
    else:
        choices = _choices(row, fields.choices) if fields.choices is not None else None
    if choices is not None and not choices:
        raise FieldMapError(
            f"instance '{ident}' (row {index}) has no choices: `fields.choices: {fields.choices}` is empty there. "
            "Fix the data, or drop such rows with `task.data.exclude`."
        )
    labels = None
    if fields.choice_labels is not None:
        labels = tuple(str(v).strip() for v in get_path(row, fields.choice_labels))
    gold: int | str | None = None
    if fields.gold is not None:
        raw = get_path(row, fields.gold, _MISSING) if "." in fields.gold else row.get(fields.gold, _MISSING)
        if raw is _MISSING:
            raise FieldMapError(f"`fields.gold: {fields.gold}` is not a column of the data ({sorted(row)}). Fix: point `task.fields` at one of those columns, or `task.data.data_files` at data that has it.")
        if choices is None:
            gold = str(raw)
        else:
            try:
                gold = _gold_index(raw, choices, labels, fields.gold_map, fields.gold_is)
            except FieldMapError as err:
                raise FieldMapError(f"instance '{ident}' (row {index}): {err}. Fix `fields.gold` (and "
                                    "`fields.gold_map` / `fields.gold_is`), or the data.") from None
            if not 0 <= gold < len(choices):  # gold_map values are not range-checked above
                raise FieldMapError(
                    f"instance '{ident}' (row {index}): gold index {gold} is out of range for its {len(choices)} "
                    "choices. Fix `fields.gold_map`, or the data."
                )
    query = render_template(fields.query, row, "`fields.query`")
    if fields.shuffle_choices and choices is not None:
        order = list(range(len(choices)))
        # deterministic per (seed, instance id): the same order on every run and for every model
        random.Random(f"{fields.shuffle_seed}:{ident}").shuffle(order)
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
    """All rows as instances; refuses duplicate ids and (for per-row choices) a gold position
    no uniform draw would give (`check_gold_positions`)."""
    instances = [row_to_instance(r, i, fields) for i, r in enumerate(rows)]
    _check_unique_ids(instances, fields)
    if fields.choices is not None:  # fixed choices (yes/no) are answers, their balance is the data's
        check_gold_positions([(len(i.choices or ()), i.gold) for i in instances], shuffled=fields.shuffle_choices)
    return instances


def _check_unique_ids(instances: list[Instance], fields: FieldMap) -> None:
    rows: dict[str, list[int]] = defaultdict(list)
    for index, inst in enumerate(instances):
        rows[inst.id].append(index)
    dups = [(ident, where) for ident, where in rows.items() if len(where) > 1]
    if dups:
        shown = "; ".join(f"'{ident}' (rows {', '.join(map(str, where[:3]))})" for ident, where in dups[:2])
        raise FieldMapError(
            f"{len(dups)} instance id(s) occur more than once in column `{fields.id}`, e.g. {shown}. Records, the "
            "response cache and paired comparisons match instances by id, so ids must be unique. Fix: point "
            "`task.fields.id` at a unique column, or leave it unset to number the rows."
        )


# Gold-position check: refuse data whose gold sits where no uniform draw would put it. Both
# conditions must hold, so large, slightly uneven sets (MMLU: 27% D) pass and a gold-first list fails:
GOLD_CHECK_MIN_N = 20  # fewer instances say too little
GOLD_CHECK_P = 1e-6  # P(this many golds at one position | uniform positions), Chernoff-Hoeffding bound
GOLD_CHECK_EXCESS = 0.10  # always answering that position beats chance by at least this much


def _kl(q: float, p: float) -> float:
    """KL divergence of Bernoulli(q) from Bernoulli(p), for q > p."""
    out = q * math.log(q / p)
    return out + ((1 - q) * math.log((1 - q) / (1 - p)) if q < 1 else 0.0)


def check_gold_positions(golds: list[tuple[int, Any]], shuffled: bool = False) -> None:
    """Raise ConfigError if the gold positions of (number of choices, gold index) pairs are ones a
    uniform guesser could not produce: at some position, the golds exceed what uniformly placed
    golds give with probability < GOLD_CHECK_P (exp(-n KL(q‖p̄)), Hoeffding 1963, which holds for
    per-instance chances 1/k_i) and by at least GOLD_CHECK_EXCESS of all instances."""
    items = [(k, g) for k, g in golds if k >= 2 and isinstance(g, int) and not isinstance(g, bool)]
    n = len(items)
    if n < GOLD_CHECK_MIN_N:
        return
    for pos in range(max(k for k, _ in items)):
        eligible = [(k, g) for k, g in items if k > pos]
        hits = sum(g == pos for _, g in eligible)
        expected = sum(1 / k for k, _ in eligible)
        excess = (hits - expected) / n
        q, p_bar = hits / len(eligible), expected / len(eligible)
        p_value = math.exp(-len(eligible) * _kl(q, p_bar)) if q > p_bar else 1.0
        if hits == n or (p_value < GOLD_CHECK_P and excess >= GOLD_CHECK_EXCESS):
            letter = LETTERS[pos] if pos < len(LETTERS) else str(pos)
            fix = ("the choices are already shuffled, so the data itself is skewed: check `fields.gold`"
                   if shuffled else "set `shuffle_choices: true` under `fields:` in the task YAML (on the command "
                   "line `++task.fields.shuffle_choices=true`) to shuffle each instance's choices with a seeded, "
                   "per-instance order, the gold remapped")
            raise ConfigError(
                f"The gold answer is at position {letter} in {hits} of {n} instances, where uniformly placed "
                f"golds give about {expected:.0f} (p < {max(p_value, 1e-300):.0e}): always answering {letter} would "
                f"score {hits / n:.2f} against a chance level of {expected / n:.2f}, so scores on this data are "
                f"not to be trusted. Fix: {fix}."
            )
