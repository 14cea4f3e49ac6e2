"""Prompt and field templates: `{column}` format strings, or Jinja2 as lm-evaluation-harness writes them.

A template holding `{{` or `{%` is Jinja (`{{ question.strip() }}`, `{% for c in choices %}`,
filters); any other is a `str.format` template, as before. The Jinja environment is lm-eval's
(StrictUndefined, trailing newlines kept, the `regex_replace` filter), so an lm-eval `doc_to_text`
renders to the same prompt; it is sandboxed, since a template is configuration, not code.
Compiled templates are cached (docs/architecture.md, "Extensions").
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment


def _regex_replace(text: str, pattern: str = "", repl: str = "", count: int = 0) -> str:
    """lm-eval's filter: `{{ text | regex_replace("\\s+", " ") }}`."""
    return re.sub(pattern, repl, text, count=count)


_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_ENV.filters["regex_replace"] = _regex_replace


class TemplateError(ValueError):
    """A template that does not parse or render; the message names where it is set and the fix."""


def is_jinja(template: str) -> bool:
    return "{{" in template or "{%" in template


@lru_cache(maxsize=1024)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def _syntax_error(template: str, where: str, err: jinja2.TemplateSyntaxError) -> TemplateError:
    return TemplateError(
        f"{where} Jinja template {template!r} does not parse ({err.message}, line {err.lineno}). Fix the "
        "template: close every `{{` with `}}` and every `{%` with `%}`, end each `{% for %}` with `{% endfor %}` "
        "and each `{% if %}` with `{% endif %}`")


def jinja_variables(template: str, where: str) -> set[str]:
    """The top-level names a Jinja template reads (TemplateError if it does not parse)."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(template)))
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(template, where, err) from None


def render_jinja(template: str, variables: Mapping[str, Any], where: str) -> str:
    """Render with StrictUndefined: a name the variables lack is an error naming what exists."""
    try:
        return _compile(template).render(**variables)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(template, where, err) from None
    except jinja2.UndefinedError as err:
        raise TemplateError(
            f"{where} Jinja template {template!r} uses something undefined ({err.message}); it can use "
            f"{', '.join(f'`{k}`' for k in sorted(variables))}. Fix the template (or the task's `fields` mapping)"
        ) from None
    except jinja2.exceptions.SecurityError as err:
        raise TemplateError(f"{where} Jinja template {template!r} is refused by the sandbox ({err}). Fix: "
                            "templates may read values and call string methods, not reach Python internals") from None
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, ZeroDivisionError) as err:
        raise TemplateError(f"{where} Jinja template {template!r} cannot be rendered ({type(err).__name__}: "
                            f"{err}). Fix the template") from None


def template_fields(template: str, where: str) -> set[str]:
    """The `{name}` placeholders of a str.format template, or the names a Jinja template reads;
    ValueError naming `where` if it cannot parse."""
    if is_jinja(template):
        return jinja_variables(template, f"`{where}`")  # a TemplateError is a ValueError
    try:
        found = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(
            f"`{where}` template {template!r} does not parse ({err}). Fix: close every `{{` with `}}`; for a "
            "literal brace write the template in Jinja (`{{ column }}`), where a single brace is plain text"
        ) from None
    bad = [n for n in found if not n or n.isdigit()]
    if bad:
        raise ValueError(
            f"`{where}` template {template!r} has a positional placeholder `{{{bad[0]}}}`. Fix: name the column, "
            "e.g. `{question}`; for a literal brace write the template in Jinja (`{{ question }}`), where a "
            "single brace is plain text"
        )
    return {n.split(".")[0].split("[")[0] for n in found}
