"""The README is executable: every ```bash block runs here, as written or as its annotation says.

tests/readme_blocks.py parses the blocks and documents the annotation syntax. Each journey (a block,
plus the blocks that run `after` it) is one test item, so a failure names the README section, and
pytest-xdist spreads the journeys over its workers. A journey runs in a fresh folder (its own
response cache, MLflow store and run folders, `scripts/` linked in) with a private evalbench home
that shares only the converted SmolLM2 (a tiny `make tool-model` must not replace the real one).
A command that exits with another code than the README states is a failing test.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.config.paths import evalbench_home
from engine.models.embedded import EMBEDDED_NAME, embedded_checkpoint_dir
from tests.readme_blocks import NOTE_PREFIX, REPO, Block, Command, Journey, journeys, parse_readme, readme_blocks
from tests.readme_checks import CHECKS, Ran

VENV_BIN = Path(sys.executable).parent
RUN_FOLDER = re.compile(r"run folder (\S+)")
LOCAL_URL = re.compile(r"http://127\.0\.0\.1:(\d+)\S*")
PLACEHOLDER = re.compile(r"\S*<[\w-]+>\S*")
TOOL_MODEL = "smollm2-135m-tools"  # a journey may train a tiny one: never link the real one in


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_recipe(target: str) -> str:
    """The shell lines of a Makefile target's own recipe (its prerequisites, `install`, are done)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{target}:"))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip().replace("$$", "$"))
    assert recipe, f"make {target}: no recipe in the Makefile"
    return " && ".join(recipe).replace(".venv/bin/python", "python")


@dataclass
class Session:
    """A journey's state: its folder, environment, printed run folders and claimed ports."""

    cwd: Path
    env: dict[str, str]
    runs: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    opendirs: list[Path] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def expand(self, text: str) -> str:
        def token(m: re.Match[str]) -> str:
            name, _, arg = m[1].partition(":")
            if name == "python":
                return sys.executable
            if name == "repo":
                return str(REPO)
            if name == "cwd":
                return str(self.cwd)
            if name == "smollm2":
                return str(embedded_checkpoint_dir())
            if name == "run":
                return self.runs[int(arg) - 1 if int(arg) > 0 else int(arg)]
            if name == "port":
                return str(self.ports.setdefault(arg, _free_port()))
            if name == "opendir":
                d = Path(tempfile.mkdtemp(prefix="evalbench-readme-"))
                d.chmod(0o755)
                self.opendirs.append(d)
                return str(d)
            return m[0]

        return re.sub(r"\{(python|repo|cwd|smollm2|run:-?\d+|port:[\w-]+|opendir)\}", token, text)

    def bind_placeholders(self, text: str) -> str:
        """`runs/<date>/freshqa__zero` → the newest printed run folder it matches (each once)."""
        taken: set[str] = set()
        for word in dict.fromkeys(PLACEHOLDER.findall(text)):
            pattern = re.compile("(^|/)" + re.sub(r"<[\w-]+>", "[^/]+", re.escape(word).replace(r"\<", "<")
                                                  .replace(r"\>", ">")) + "$")
            match = next((r for r in reversed(self.runs) if pattern.search(r) and r not in taken), None)
            assert match, f"no run folder printed so far matches {word!r}: {self.runs}"
            taken.add(match)
            text = text.replace(word, match)
        return text


def command_line(cmd: Command, session: Session) -> str:
    """The shell line the test runs for a README command: directives applied, placeholders bound."""
    text = cmd.text
    if text.startswith("make "):
        target, _, rest = text[len("make "):].partition(" ")
        text = f"{make_recipe(target)} {rest}".strip()
    for d in cmd.directives:
        arg = session.expand(d.arg)
        if d.verb == "sub":
            old, sep, new = d.arg.partition(" => ")
            assert sep and old in text, f"`sub {d.arg}`: {old!r} is not in {text!r}"
            text = text.replace(old, session.expand(new))
        elif d.verb == "limit":
            text, n = re.subn(r"(?<=\s)limit=\S+", f"limit={arg}", text)
            text = text if n else _append(text, f"limit={arg}")
        elif d.verb == "append":
            text = _append(text, arg)
    return session.bind_placeholders(text)


def _append(text: str, extra: str) -> str:
    """Before a trailing comment (`cmd   # why`), else at the end."""
    m = re.search(r"\s+#\s", text)
    return f"{text[:m.start()]} {extra}{text[m.start():]}" if m else f"{text} {extra}"


def _directive(cmd: Command, verb: str) -> str | None:
    return next((d.arg for d in reversed(cmd.directives) if d.verb == verb), None)


def run_command(cmd: Command, block: Block, session: Session) -> None:
    line = command_line(cmd, session)
    where = f"README line {block.line} ({block.heading}), command {cmd.index}: {cmd.text}\nran: {line}"
    if _directive(cmd, "serve") is not None:
        _serve(line, cmd, session, where)
        return
    timeout = float(_directive(cmd, "timeout") or 600)
    started, cpu = time.monotonic(), _children_cpu()
    res = subprocess.run(["bash", "-c", line], cwd=session.cwd, env=session.env, capture_output=True, text=True,
                         timeout=timeout)
    output = res.stdout + res.stderr
    session.log.append(f"$ {line}\n  exit {res.returncode} after {time.monotonic() - started:.1f} s "
                       f"({_children_cpu() - cpu:.1f} s CPU)")
    expected = int(_directive(cmd, "exit") or 0)
    assert res.returncode == expected, f"{where}\nexit {res.returncode}, README says {expected}\n" \
        f"--- stdout ---\n{res.stdout[-4000:]}\n--- stderr ---\n{res.stderr[-4000:]}"
    for d in cmd.directives:
        if d.verb == "expect":
            assert session.expand(d.arg) in output, f"{where}\nits output lacks {d.arg!r}:\n{output[-4000:]}"
    printed = [str(Path(f).relative_to(session.cwd)) if Path(f).is_relative_to(session.cwd) else f
               for f in RUN_FOLDER.findall(res.stdout)]
    session.runs += printed
    for d in cmd.directives:
        if d.verb == "check":
            CHECKS[d.arg](Ran(cwd=session.cwd, env=session.env, stdout=res.stdout, runs=printed))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _serve(line: str, cmd: Command, session: Session, where: str) -> None:
    """Start the server, wait for its URL (printed, or its `--port`), GET it (200), stop it."""
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=session.cwd, env=session.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    port_arg = re.search(r"--port[ =]([1-9]\d*)", line)
    deadline = time.monotonic() + float(_directive(cmd, "timeout") or 180)
    body = ""
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{where}\nthe server exited with {proc.returncode}:\n{''.join(output)[-4000:]}"
            printed = LOCAL_URL.search("".join(output))
            port = printed[1] if printed else (port_arg[1] if port_arg else None)
            if port:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                        assert resp.status == 200, f"{where}\nGET / answered {resp.status}"
                        body = resp.read().decode(errors="replace")
                        break
                except (urllib.error.URLError, ConnectionError):
                    pass
            time.sleep(0.5)
        else:
            pytest.fail(f"{where}\nno answer on http://127.0.0.1 within the timeout:\n{''.join(output)[-4000:]}")
        for d in cmd.directives:
            if d.verb == "expect":
                assert d.arg in body + "".join(output), f"{where}\nneither its page nor its output has {d.arg!r}"
        session.log.append(f"$ {line}\n  served on port {port}")
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _private_home(root: Path) -> Path:
    """An evalbench home sharing the converted models (not the tool model) and the external venvs."""
    shared = evalbench_home()
    embedded_checkpoint_dir()  # converted once, under its lock, before any journey links it
    home = root / "evalbench-home"
    (home / "models").mkdir(parents=True)
    for entry in (shared / "models").iterdir():
        if entry.name != TOOL_MODEL and not entry.name.startswith("."):
            (home / "models" / entry.name).symlink_to(entry)
    assert (home / "models" / EMBEDDED_NAME).exists()
    if (shared / "venvs").is_dir():
        (home / "venvs").symlink_to(shared / "venvs")
    return home


def _session(root: Path, journey: Journey) -> Session:
    cwd = root / "work"
    cwd.mkdir()
    (cwd / "scripts").symlink_to(REPO / "scripts")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "EVALBENCH_CONFIG_PATH")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", EVALBENCH_HOME=str(_private_home(root)),
               PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    session = Session(cwd=cwd, env=env)
    for block in journey.blocks:
        for assignment in block.all("env"):
            name, _, value = assignment.partition("=")
            session.env[name] = session.expand(value)
    return session


def run_journey(journey: Journey, root: Path) -> Session:
    session = _session(root, journey)
    cleanups = [c for block in journey.blocks for c in block.all("cleanup")]
    started: set[int] = set()
    try:
        for block, commands in journey.segments():
            if block.line not in started:
                started.add(block.line)
                _prepare(block, session)
            for cmd in commands:
                if not cmd.skip:
                    run_command(cmd, block, session)
    finally:
        for cleanup in cleanups:
            subprocess.run(["bash", "-c", session.expand(cleanup)], cwd=session.cwd, env=session.env, timeout=300,
                           capture_output=True)
        for d in session.opendirs:
            subprocess.run(["rm", "-rf", str(d)], check=False)
    return session


def _prepare(block: Block, session: Session) -> None:
    """The section's files, then the block's `setup:` commands."""
    for path, text in block.files:
        (session.cwd / path).parent.mkdir(parents=True, exist_ok=True)
        (session.cwd / path).write_text(text)
    for setup in block.all("setup"):
        done = subprocess.run(["bash", "-c", session.expand(setup)], cwd=session.cwd, env=session.env, timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"README line {block.line}: setup {setup!r} failed:\n{done.stderr[-3000:]}"


JOURNEYS = journeys(readme_blocks())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(JOURNEYS))
def test_readme_block_runs(name: str, tmp_path: Path) -> None:
    session = run_journey(JOURNEYS[name], tmp_path)
    print("\n".join(session.log))


def test_every_bash_block_is_run_or_says_why_not() -> None:
    text = (REPO / "README.md").read_text()
    blocks = readme_blocks()
    assert len(blocks) == text.count("\n```bash\n") > 0
    run_here = {b.line for j in journeys(blocks).values() for b in j.blocks}  # README as it is now
    for block in blocks:
        skipped = block.skipped or any(c.skip for c in block.commands)
        assert block.line in run_here or block.skipped, f"README line {block.line}: in no journey"
        if skipped:
            assert block.note and len(block.note) > len(NOTE_PREFIX) + 10, (
                f"README line {block.line} ({block.heading}): a skipped block or command needs the visible reason "
                f"right after the block, a paragraph starting {NOTE_PREFIX!r}")
        assert block.skipped or any(not c.skip for c in block.commands), f"README line {block.line}: nothing runs"


def test_annotations_name_real_commands() -> None:
    """A directive for command N of a block with fewer commands, or a `sub` whose text is gone, is an error."""
    for block in readme_blocks():
        for d in block.directives:
            assert all(1 <= n <= len(block.commands) for n in d.lines), f"README line {block.line}: {d}"
        for cmd in block.commands:
            for d in cmd.directives:
                if d.verb == "sub":
                    assert d.arg.partition(" => ")[0] in cmd.text, f"README line {block.line}: {d.arg!r} ∉ {cmd.text!r}"
                if d.verb == "check":
                    assert d.arg in CHECKS, f"README line {block.line}: no check {d.arg!r} in tests/test_readme.py"


def test_the_annotation_parser() -> None:
    readme = ("# T\n\n<!-- test: id j -->\n<!-- test:\n2: limit 3\n2: exit 3\n3: skip\n-->\n```bash\n"
              "python -m engine \\\n    task=mmlu   # first\n# a comment line\npython -m engine task=x limit=200\n"
              "make test\n```\n\n*Not run by `make test`: `make test` itself (the suite would run itself).*\n")
    (block,) = parse_readme(readme)
    assert [c.text for c in block.commands] == ["python -m engine task=mmlu   # first",
                                                "python -m engine task=x limit=200", "make test"]
    assert block.first("id") == "j" and block.commands[2].skip and not block.commands[0].skip
    session = Session(cwd=Path("/nonexistent"), env={}, runs=["runs/2026-01-01/x", "runs/2026-01-02/x"])
    assert command_line(block.commands[1], session) == "python -m engine task=x limit=3"
    assert _directive(block.commands[1], "exit") == "3" and block.note and "itself" in block.note
    line = session.bind_placeholders("compare runs/<a>/x runs/<b>/x")
    assert line == "compare runs/2026-01-02/x runs/2026-01-01/x"
    assert shlex.split(make_recipe("run")) == ["python", "-m", "engine"]
