"""Response cache (SQLite): a finished request is never sent twice; a killed run resumes."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from pydantic import TypeAdapter

from engine.api import ModelIdentity, Request, Response, stable_hash

_RESPONSE = TypeAdapter(Response)


def cache_key(identity: ModelIdentity, request: Request, scaffold: str, tools: list[str], sample_index: int) -> str:
    """ARCHITECTURE §6: hash of (model identity, request incl. sampling, tools, scaffold, sample index)."""
    model = identity.model_dump(mode="json", exclude={"checkpoint_step"})
    if model.get("content_hash"):
        model.pop("path", None)  # same weights elsewhere on disk are the same model
    return stable_hash(
        {"model": model, "request": request.model_dump(mode="json"), "scaffold": scaffold,
         "tools": sorted(tools), "sample": sample_index}
    )


class ResponseCache:
    def __init__(self, path: str | Path | None):
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is None:
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, Response]:
        if self._db is None or not keys:
            return {}
        found: dict[str, Response] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk):
                    found[key] = _RESPONSE.validate_python(json.loads(blob))
        return found

    def put_many(self, items: dict[str, Response]) -> None:
        if self._db is None or not items:
            return
        rows = [(k, json.dumps(v.model_dump(mode="json"))) for k, v in items.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
