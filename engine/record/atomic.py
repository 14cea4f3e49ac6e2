"""Atomic file writes for the run folder (docs/architecture.md, "Records that are never lost").

A file is written to a temporary sibling, flushed to disk, then renamed over its target: a reader
(or a crash, a SIGKILL, a full disk) sees either the previous complete file or the new complete
one, never a record cut in half. The rename is atomic because the temporary file is in the same
directory, hence on the same file system.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

_UMASK = os.umask(0o022)  # read (and restored just below): mkstemp files are 0600, records are not secret
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` only if the block completes without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), _mode_for(path))
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _mode_for(path: Path) -> int:
    """The permissions an ordinary write would give: the target's, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk, or a power cut may bring the old name back.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename still happened
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    """One line per item (a newline is added): instances.jsonl."""
    with atomic_open(path) as fh:
        for line in lines:
            fh.write(line + "\n")
