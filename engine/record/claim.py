"""One live process per output folder (docs/architecture.md, "Records that are never lost").

Two runs started together resolve to the same output folder: a script's `&`, parallel jobs given
one `output_dir`, or two commands in the same second under the default timestamped
`hydra.run.dir`. Each would write its task folders there, and one run's instances.jsonl could end
up beside the other's experiment.json: a record whose numbers belong to another run. So a run
claims its output folder before any compute: an exclusive `flock` on `<folder>/.evalbench-claim`,
held until the process ends. The kernel drops the lock on any exit, SIGKILL included, so a killed
run never leaves a stale claim, and a later run (a re-run, a resume) reuses the folder as before.
A folder that another live process holds is left to it: this run writes to `<folder>-2` (or `-3`,
...) and says so.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock on this platform: folders are not claimed
    fcntl = None  # type: ignore[assignment]

CLAIM_FILE = ".evalbench-claim"
_claims: dict[Path, tuple[Path, int]] = {}  # asked-for folder -> (claimed folder, the lock's fd)
_lock = threading.Lock()


def _try_claim(folder: Path) -> int | None:
    """The fd holding an exclusive lock on `folder`'s claim file (-1: the file system has no locks),
    or None when a live process has it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # e.g. ENOLCK on a network file system without locking: the folder is not claimed
        os.close(fd)
        return -1
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for the other process's message
    return fd


def holder(folder: Path) -> str:
    """The pid written by the process that holds `folder` ('?' when unreadable)."""
    try:
        return (folder / CLAIM_FILE).read_text().strip() or "?"
    except OSError:
        return "?"


def claim_output_dir(folder: Path) -> Path:
    """`folder` itself when no other live process holds it, else the first free `folder-N`. The
    claim lasts as long as this process; asking again for a folder (or for the one it got) returns
    the same folder."""
    folder = folder.absolute()
    if fcntl is None:
        return folder
    with _lock:
        if folder in _claims:
            return _claims[folder][0]
        if any(got == folder for got, _ in _claims.values()):
            return folder
        n = 1
        while True:
            candidate = folder if n == 1 else folder.with_name(f"{folder.name}-{n}")
            fd = _try_claim(candidate)
            if fd is not None:
                _claims[folder] = (candidate, fd)
                return candidate
            n += 1
