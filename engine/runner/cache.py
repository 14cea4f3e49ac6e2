"""The result cache (SQLite): a finished work item is never run twice; a killed run resumes.

Keys hash everything that can change an answer (docs/architecture.md, "The response cache"): the
model identity (provider, where it is served, name, revision, weights, tokenizer and chat template,
serving options), the request with its sampling, the tools, the scaffold policy, the sample index.
Every row carries a checksum over key and value: a corrupted or edited row is a miss with a
warning, never a score.

Writes are group commits: `put_soon` queues rows and one transaction per event-loop turn writes
everything answered in that turn; with WAL and `synchronous=NORMAL` a commit is a write to the
OS, not an fsync, so it survives the process being killed (a power loss may lose the last
commits, never corrupt the file). One fsync per answer blocked the event loop for milliseconds
each and capped the requests in flight (docs/architecture.md, "The response cache").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config.errors import ConfigError
from engine.types import InstanceError, ModelIdentity, TrajectoryStep, WorkRequest, WorkResponse, stable_hash

SCHEMA = "results_v2"  # rows of older layouts are never read


class WorkResult(BaseModel):
    """What a work item produced: a model response, a trajectory's steps, an execution's scores."""

    model_config = ConfigDict(frozen=True)

    response: WorkResponse | None = None
    steps: tuple[TrajectoryStep, ...] = ()
    scores: dict[str, float] | None = None
    extracted: Any = None
    error: InstanceError | None = None


def cache_key(identity: ModelIdentity, request: WorkRequest, scaffold: str, tools: list[str], sample_index: int) -> str:
    model = identity.model_dump(mode="json", exclude={"checkpoint_step"})
    if model.get("content_hash"):
        model.pop("path", None)  # same weights elsewhere on disk are the same model
    return stable_hash(
        {"model": model, "request": request.model_dump(mode="json"), "scaffold": scaffold,
         "tools": sorted(tools), "sample": sample_index}
    )


def _checksum(key: str, blob: str) -> str:
    return hashlib.sha256(f"{key}\x00{blob}".encode()).hexdigest()


class ResultCache:
    BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction to end

    def __init__(self, path: str | Path | None):
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.rejected = 0
        self._pending: list[tuple[str, str, str]] = []
        self._write_errors: set[str] = set()
        self._flush_scheduled = False
        if path is None:
            return
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"cache.path {path} is a directory; the response cache is one SQLite file. Fix: point "
                              f"`cache.path` at a file, e.g. cache.path={path / 'responses.sqlite'}.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=self.BUSY_TIMEOUT_S)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable against a kill without an fsync per commit
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA} (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                             "checksum TEXT NOT NULL)")
            self._db.commit()
        except (sqlite3.DatabaseError, OSError) as err:
            raise ConfigError(
                f"The response cache {path} cannot be used ({err}). Fix: move the file aside (nothing of the "
                "run folders depends on it; responses are re-computed), point `cache.path` elsewhere, or run "
                "with `cache.enabled=false`."
            ) from None

    def get_many(self, keys: list[str]) -> dict[str, WorkResult]:
        if self._db is None or not keys:
            return {}
        self.flush()  # rows queued by put_soon are answers too
        found: dict[str, WorkResult] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, value, checksum FROM {SCHEMA} WHERE key IN ({marks})", chunk)
                for key, blob, checksum in rows:
                    result = self._verified(key, blob, checksum)
                    if result is not None:
                        found[key] = result
        return found

    def _verified(self, key: str, blob: str, checksum: str) -> WorkResult | None:
        try:
            if _checksum(key, blob) != checksum:
                raise ValueError("checksum mismatch")
            return WorkResult.model_validate(json.loads(blob))
        except ValueError as err:
            self.rejected += 1
            print(f"[evalbench] warning: cache row {key[:12]} is corrupt ({err}); it is re-computed.", file=sys.stderr)
            return None

    @staticmethod
    def _rows(items: dict[str, WorkResult]) -> list[tuple[str, str, str]]:
        rows = []
        for k, v in items.items():
            blob = json.dumps(v.model_dump(mode="json"), sort_keys=True, default=str)
            rows.append((k, blob, _checksum(k, blob)))
        return rows

    def put_many(self, items: dict[str, WorkResult]) -> None:
        """Write now (one transaction), with whatever `put_soon` queued."""
        if self._db is None or not items:
            return
        self._pending.extend(self._rows(items))
        self.flush()

    def put_soon(self, items: dict[str, WorkResult]) -> None:
        """Queue rows for this event-loop turn's group commit (outside a loop: write now)."""
        if self._db is None or not items:
            return
        self._pending.extend(self._rows(items))
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit the queued rows in one transaction."""
        self._flush_scheduled = False
        if self._db is None or not self._pending:
            return
        with self._lock:
            rows, self._pending = self._pending, []
            try:
                self._db.executemany(f"INSERT OR REPLACE INTO {SCHEMA} VALUES (?, ?, ?)", rows)
                self._db.commit()
            except sqlite3.Error as err:
                # Locked past the busy timeout by another run, a full disk, an I/O error: the answers
                # stay queued for the next commit (the run's records have them either way).
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                self._pending = rows + self._pending
                if str(err) not in self._write_errors:
                    self._write_errors.add(str(err))
                    print(f"[evalbench] warning: the response cache could not be written ({err}); "
                          "its answers are kept and written with the next ones.", file=sys.stderr)

    def close(self) -> None:
        self.flush()
        if self._pending:
            print(f"[evalbench] warning: {len(self._pending)} answer(s) did not reach the response cache "
                  f"({'; '.join(sorted(self._write_errors))}). The run's records have them; a re-run computes "
                  "them again.", file=sys.stderr)
            self._pending = []
        if self._db is not None:
            self._db.close()
            self._db = None
