"""Extension registries (docs/architecture.md, "Extensions"): each package keeps one per kind."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")

HOW_TO_REGISTER = (
    "To add one, define it with `{decorator}` in a module of yours and list that module under `imports:` "
    "(e.g. `imports: [mypkg.evals]` in the config, or `'imports=[mypkg.evals]'` on the command line), or "
    "expose the module as an entry point of group `evalbench.plugins` in your package's pyproject.toml"
)


def origin_of(obj: Any) -> str:
    """`module:qualname` of a function or class (what a duplicate-name error shows)."""
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}:{getattr(obj, '__qualname__', None) or getattr(obj, '__name__', repr(obj))}"


def unknown_name_message(kind: str, name: str, known: list[str] | set[str], decorator: str, where: str = "") -> str:
    """One paragraph: the unknown name, the closest known ones, every known one, how to register one."""
    names = sorted(known)
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.5) or [k for k in names if name.lower() in k.lower()][:3]
    hint = f" Did you mean {', '.join(repr(k) for k in near)}?" if near else ""
    place = f" in {where}" if where else ""
    return (f"Unknown {kind} {name!r}{place}.{hint} Known {kind}s: {', '.join(names) or '(none)'}. "
            + HOW_TO_REGISTER.format(decorator=decorator) + ".")


class Registry(Generic[_T]):
    """Name -> object of one kind (tasks, scorers, tools, scaffolds), each with its origin.

    Two definitions under one name are an error naming both (`module:qualname`); defining the same
    object again (a module imported twice) replaces it. `on_add` lets a package tell a lower layer
    the name (config validates names without importing the packages that define them).
    """

    def __init__(self, kind: str, decorator: str, error: type[Exception] = ValueError,
                 on_add: Callable[[str, _T], None] | None = None):
        self.kind = kind
        self.decorator = decorator
        self.error = error
        self.on_add = on_add
        self._items: dict[str, _T] = {}
        self._origins: dict[str, str] = {}

    def add(self, name: str, obj: _T, origin: str | None = None) -> _T:
        origin = origin or origin_of(obj)
        old = self._origins.get(name)
        if old is not None and old != origin:
            raise self.error(
                f"Two {self.kind}s are named {name!r}: {old} and {origin}. Names must be unique. Fix: rename one "
                f"(`{self.decorator}(name=\"...\")`), or stop importing one of the two modules.")
        if self.on_add is not None:  # first: a name it refuses (e.g. a score the engine writes) is never stored
            self.on_add(name, obj)
        self._items[name] = obj
        self._origins[name] = origin
        return obj

    def get(self, name: str, where: str = "") -> _T:
        if name not in self._items:
            raise self.error(unknown_name_message(self.kind, name, set(self._items), self.decorator, where))
        return self._items[name]

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
