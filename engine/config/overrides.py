"""Command-line overrides as one typed value, parsed once with Hydra's own override parser.

`key=value`, `+key=value`, `++key=value`, `~key` and sweeps (`key=a,b`, `key=range(1,4)`) are read
here once into `ParsedOverrides` (docs/architecture.md, "The flow of one run"); every later step
(search path, plugins, task specs, variants, composition, a sweep's jobs) reads the typed value
instead of splitting strings. A new override is built as text and parsed too, so every `Override`
has passed Hydra's grammar. Text the grammar refuses is a ConfigError naming it and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, OverrideType, Sweep
from hydra.core.override_parser.types import Override as HydraOverride
from hydra.errors import OverrideParseException
from pydantic import BaseModel, ConfigDict

from engine.config.errors import ConfigError

Kind = Literal["assign", "add", "force_add", "delete"]
KINDS: dict[OverrideType, Kind] = {OverrideType.CHANGE: "assign", OverrideType.ADD: "add",
                                   OverrideType.FORCE_ADD: "force_add", OverrideType.DEL: "delete"}
PREFIXES: dict[Kind, str] = {"assign": "", "add": "+", "force_add": "++", "delete": "~"}
_PARSER = OverridesParser.create()


def _plain(value: Any) -> list[str]:
    """A parsed value as plain strings: a list's elements, or the one scalar (None is `null`)."""
    if isinstance(value, list):
        return [s for v in value for s in _plain(v)]
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    return [str(value)]


class Override(BaseModel):
    """One override of the command line, as Hydra's grammar reads it."""

    model_config = ConfigDict(frozen=True)

    text: str  # as typed (or as built), in override grammar
    key: str  # the dotted key or config group (`model.path`, `hydra/launcher`), with its `@package`
    kind: Kind
    value: str | None = None  # the text after `=`, as typed; None for `~key`
    names: tuple[str, ...] = ()  # the value as plain strings: a list's elements, a scalar, a sweep's choices
    is_list: bool = False  # `task=[a,b]`: several values in one job
    sweep: tuple[str, ...] = ()  # a sweep's choices, each in override grammar (`a\:rc`, `[a,b]`)

    @property
    def plain(self) -> str | None:
        """The value of a plain scalar override (`task=mmlu:rc` → `mmlu:rc`), else None."""
        return self.names[0] if self.value is not None and not self.is_list and not self.sweep else None

    @property
    def choices(self) -> list[Override]:
        """A sweep's choices as one override each (`task=a,b` → `task=a`, `task=b`); else itself."""
        return [parse_override(f"{PREFIXES[self.kind]}{self.key}={c}") for c in self.sweep] if self.sweep else [self]


def _typed(parsed: HydraOverride) -> Override:
    value = parsed.value()
    sweep = tuple(parsed.sweep_string_iterator()) if isinstance(value, Sweep) else ()
    if parsed.value_type is None:
        names: list[str] = []
    elif sweep:  # a choice sweep's own values (a list choice flattened); a range's rendered ones
        names = _plain(value.list) if isinstance(value, ChoiceSweep) else list(sweep)
    else:
        names = _plain(value)
    return Override(text=str(parsed.input_line), key=str(parsed.key_or_group), kind=KINDS[parsed.type],
                    value=None if parsed.value_type is None else parsed.get_value_string(), names=tuple(names),
                    is_list=isinstance(value, list), sweep=sweep)


def quote(value: str) -> str:
    """A string as a quoted value of the grammar (a path may hold characters the grammar reserves)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_override(text: str) -> Override:
    """One override, through Hydra's parser; its grammar errors are a ConfigError with the fix."""
    try:
        return _typed(_PARSER.parse_overrides([text])[0])
    except OverrideParseException as err:
        why = " ".join(line for line in str(err).splitlines() if line.strip() and "hydra.cc" not in line)
        raise ConfigError(
            f"Cannot read the override `{text}`: {why.rstrip('.')}. Fix: write `key=value` (`+key=value` adds a key "
            "the chosen file does not set, `~key` removes one, `key=a,b` sweeps with `-m`); quote a value that holds "
            "spaces or any of ()[]{}:=, as `key='a value'` (in the shell: \"key='a value'\")."
        ) from None


class ParsedOverrides(BaseModel):
    """The command line's overrides, in order. `expanded`: task specs and variant names resolved
    (engine/config/compose.py `prepare`), so composing it again expands nothing."""

    model_config = ConfigDict(frozen=True)

    items: tuple[Override, ...] = ()
    expanded: bool = False

    @classmethod
    def parse(cls, args: Iterable[str]) -> ParsedOverrides:
        return cls(items=tuple(parse_override(a) for a in args))

    def __iter__(self) -> Iterator[Override]:  # type: ignore[override]
        return iter(self.items)

    def strings(self) -> list[str]:
        return [o.text for o in self.items]

    def last(self, *keys: str) -> Override | None:
        """The last override of any of `keys` (the one Hydra applies), whatever its kind."""
        return next((o for o in reversed(self.items) if o.key in keys), None)

    def typed_keys(self) -> frozenset[str]:
        """The keys given a value (`~task` alone sets none)."""
        return frozenset(o.key for o in self.items if o.value is not None)

    def without(self, *keys: str) -> ParsedOverrides:
        return self.model_copy(update={"items": tuple(o for o in self.items if o.key not in keys)})

    def plus(self, *texts: str) -> ParsedOverrides:
        return self.model_copy(update={"items": (*self.items, *(parse_override(t) for t in texts))})
