"""Atomic file writes for the run folder (docs/architecture.md, "The run folder").

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


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` only if the block completes without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


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
