"""README.md's command blocks and their test annotations (tests/test_readme.py runs them).

A command block is a fenced ```bash block. Each of its lines is a command (`\\` continuations
joined; blank and comment-only lines dropped), run in order through bash in one working folder.
HTML comments right above the fence, invisible on GitHub, say how the test runs it:

    <!-- test: limit 2 -->                         one directive per comment, or several, one per line:
    <!-- test:
    id tour                                        the block's journey name (default: its heading's slug)
    after worked-example                           run in that block's journey, after it (shares its folder);
                                                   `after tracking:2`: after the head block's command 2
    setup: mkdir -p ckpt                           a shell command before the block's first command
    cleanup: bash scripts/tracking_server.sh stop  a shell command after the block, also when it failed
    env NAME=VALUE                                 an environment variable for every command
    3: limit 2                                     command 3 only (1-based; `2,5:` for several)
    -->

Directives per command (without `N:` they apply to every command of the block):
  `limit N`          replace the command's `limit=...`, or append `limit=N`
  `append TEXT`      append TEXT (e.g. `inspect=true`, `--once`)
  `sub OLD => NEW`   replace the literal OLD by NEW (syntax placeholders such as `A B`, `...`)
  `exit N`           the exit code the README states for it (default 0)
  `expect TEXT`      its output (stdout + stderr) contains TEXT
  `check NAME`       then the assertions of CHECKS[NAME] in tests/test_readme.py (records, MLflow)
  `serve`            a server: start it, GET the URL it prints (or its `--port`), expect 200, stop it
  `timeout S`        seconds before it counts as hung (default 600)
  `skip`             not run; the block (or command) needs a visible note right after the fence:
                     a paragraph starting `*Not run by `make test`:` that gives the reason.

Tokens expanded in every directive's text: `{python}` (the venv's python), `{repo}`, `{smollm2}` (the
converted embedded checkpoint), `{run:N}` (the N-th run folder the journey's commands printed, 1-based,
negative from the newest), `{port:NAME}` (a free loopback port, one per NAME per journey), `{opendir}`
(a fresh folder other users can enter: PostgreSQL runs as `postgres`), `{cwd}` (the journey's folder).
The files a section shows after `<!-- file: PATH -->` are written into the folder before its block runs.
A README placeholder such as
`runs/<date>/freshqa__zero` binds to the newest printed run folder it matches that no other placeholder
of the command took. `python` and `mlflow` are the venv's; `make X` runs the Makefile recipe of X.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTE_PREFIX = "*Not run by `make test`:"
LINE_VERBS = ("limit", "append", "sub", "exit", "expect", "check", "serve", "timeout", "skip")
BLOCK_VERBS = ("id", "after", "setup:", "cleanup:", "env")


@dataclass(frozen=True)
class Directive:
    verb: str
    arg: str
    lines: tuple[int, ...] = ()  # empty: every command of the block


@dataclass(frozen=True)
class Command:
    index: int  # 1-based within its block
    text: str  # as the README shows it (continuations joined)
    skip: bool
    directives: tuple[Directive, ...]


@dataclass(frozen=True)
class Block:
    heading: str
    slug: str
    line: int  # of the opening fence, 1-based
    commands: tuple[Command, ...]
    directives: tuple[Directive, ...]
    note: str | None  # the visible "Not run by `make test`" paragraph after the block
    files: tuple[tuple[str, str], ...] = ()  # (path, text) of the `<!-- file: PATH -->` blocks of its section

    def first(self, verb: str) -> str | None:
        return next((d.arg for d in self.directives if d.verb == verb), None)

    def all(self, verb: str) -> list[str]:
        return [d.arg for d in self.directives if d.verb == verb]

    @property
    def skipped(self) -> bool:
        return any(d.verb == "skip" and not d.lines for d in self.directives)


@dataclass
class Journey:
    """Blocks run in one working folder, one after the other: later commands use earlier outputs."""

    name: str
    head: Block
    # blocks that run `after` this journey, each after command K of the head (None: after the head)
    inserts: list[tuple[Block, int | None]] = field(default_factory=list)

    @property
    def blocks(self) -> list[Block]:
        return [self.head, *(b for b, _ in self.inserts)]

    def segments(self) -> list[tuple[Block, tuple[Command, ...]]]:
        """(block, its commands) in running order: an insert `after NAME:K` runs after the head's command K."""
        out: list[tuple[Block, tuple[Command, ...]]] = []
        done = 0
        for cut in sorted({k for _, k in self.inserts if k is not None}) + [None]:
            end = len(self.head.commands) if cut is None else cut
            out.append((self.head, self.head.commands[done:end]))
            done = end
            out += [(b, b.commands) for b, k in self.inserts if k == cut]
        return out


def slugify(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower().replace("`", "")).strip("-")


def parse_directive(text: str) -> Directive:
    text = text.strip()
    lines: tuple[int, ...] = ()
    m = re.match(r"^(\d+(?:,\d+)*):\s*(.*)$", text)
    if m:
        lines, text = tuple(int(n) for n in m[1].split(",")), m[2]
    verb, _, arg = text.partition(" ")
    if verb in ("setup:", "cleanup:"):
        verb = verb.rstrip(":")
    elif verb not in LINE_VERBS + BLOCK_VERBS:
        raise ValueError(f"unknown README test directive {text!r}")
    return Directive(verb=verb, arg=arg.strip(), lines=lines)


def _annotations(lines: list[str], fence: int) -> list[Directive]:
    """The `<!-- test: ... -->` comments directly above the fence (other comments may sit between)."""
    out: list[Directive] = []
    i = fence - 1
    while i >= 0 and lines[i].rstrip().endswith("-->"):
        start = i
        while not lines[start].lstrip().startswith("<!--"):
            start -= 1
        comment = "\n".join(lines[start:i + 1]).strip()[4:-3].strip()
        if comment.startswith("test:"):
            body = comment[len("test:"):]
            out = [parse_directive(d) for d in body.splitlines() if d.strip()] + out
        i = start - 1
    return out


def _commands(body: list[str]) -> list[str]:
    joined: list[str] = []
    pending = ""
    for raw in body:
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = (pending + line.strip()).strip()
        pending = ""
        if line and not line.startswith("#"):
            joined.append(line)
    return joined


def _note_after(lines: list[str], close: int) -> str | None:
    para: list[str] = []
    for line in lines[close + 1:]:
        if not line.strip():
            if para:
                break
            continue
        para.append(line.strip())
    text = " ".join(para)
    return text if text.startswith(NOTE_PREFIX) else None


def parse_readme(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    files: dict[str, list[tuple[str, str]]] = {}
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("```"):
            close = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            marker = re.fullmatch(r"<!-- file: (\S+) -->", lines[i - 1].strip()) if i else None
            if marker:
                files.setdefault(heading, []).append((marker[1], "\n".join(lines[i + 1:close]) + "\n"))
            if line.strip() == "```bash":
                directives = _annotations(lines, i)
                texts = _commands(lines[i + 1:close])
                commands = tuple(
                    Command(index=n, text=t, skip=any(d.verb == "skip" and n in d.lines for d in directives),
                            directives=tuple(d for d in directives if d.verb in LINE_VERBS and d.verb != "skip"
                                             and (not d.lines or n in d.lines)))
                    for n, t in enumerate(texts, 1))
                blocks.append(Block(heading=heading, slug=slugify(heading), line=i + 1, commands=commands,
                                    directives=tuple(directives), note=_note_after(lines, close),
                                    files=tuple(files.get(heading, ()))))
            i = close
        i += 1
    return blocks


def journeys(blocks: list[Block]) -> dict[str, Journey]:
    """Each block's journey: its own (`id`, default the heading slug), or the one it runs `after`."""
    out: dict[str, Journey] = {}
    for block in blocks:
        if block.skipped or block.first("after"):
            continue
        name = block.first("id") or block.slug
        if name in out:
            name = f"{name}-{block.line}"
        out[name] = Journey(name=name, head=block)
    for block in blocks:
        after = block.first("after")
        if after and not block.skipped:
            name, _, cut = after.partition(":")
            if name not in out:
                raise ValueError(f"README line {block.line}: `after {after}` names no journey ({sorted(out)})")
            out[name].inserts.append((block, int(cut) if cut else None))
    return out


def readme_blocks() -> list[Block]:
    return parse_readme((REPO / "README.md").read_text())
