"""Search backends: a local SQLite FTS5 index over a document corpus, and HTTP APIs (Serper, Tavily).

A corpus is a directory (or one file) of documents: ``*.txt`` / ``*.md`` (title = first line,
id = relative path) and ``*.jsonl`` / ``*.json`` rows with ``text`` (or ``contents``/``body``) and
optional ``id``, ``title``, ``url``. Documents are addressed as ``corpus://<id>`` so
``fetch_page`` can open them without network. The index lives in memory, built once per process
per corpus (small corpora: a few thousand documents index in well under a second).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config.paths import resolve_project_path

CORPUS_SCHEME = "corpus://"
_TOKEN = re.compile(r"[A-Za-z0-9]+")
_STOP = frozenset("a an and are as at be by for from has have in is it of on or that the this to was were "
                  "what when where which who whom whose why how with did does do".split())


class SearchHit(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    url: str
    snippet: str
    score: float = 0.0


def _read_documents(root: Path) -> list[dict[str, str]]:
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.upper().startswith("README"))
    docs: list[dict[str, str]] = []
    for f in files:
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        if f.suffix in (".txt", ".md"):
            text = f.read_text(encoding="utf-8", errors="replace").strip()
            title = text.splitlines()[0].lstrip("# ").strip() if text else rel
            docs.append({"id": rel, "title": title, "text": text, "url": CORPUS_SCHEME + rel})
        elif f.suffix in (".jsonl", ".json"):
            raw = f.read_text(encoding="utf-8", errors="replace")
            rows = [json.loads(line) for line in raw.splitlines() if line.strip()] if f.suffix == ".jsonl" else json.loads(raw)
            for i, row in enumerate(rows if isinstance(rows, list) else [rows]):
                text = str(row.get("text") or row.get("contents") or row.get("body") or "")
                ident = str(row.get("id", f"{rel}#{i}"))
                docs.append({"id": ident, "title": str(row.get("title", ident)), "text": text,
                             "url": str(row.get("url") or CORPUS_SCHEME + ident)})
    return docs


class LocalIndex:
    """SQLite FTS5 (bm25 ranking, porter stemming) over one corpus."""

    _cache: dict[str, LocalIndex] = {}
    _cache_lock = threading.Lock()

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("CREATE VIRTUAL TABLE docs USING fts5(id UNINDEXED, title, text, url UNINDEXED, "
                        "tokenize='porter unicode61')")
        self.docs = _read_documents(root)
        self.db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)",
                            [(d["id"], d["title"], d["text"], d["url"]) for d in self.docs])
        self.db.commit()
        self.by_id = {d["id"]: d for d in self.docs}

    @classmethod
    def for_corpus(cls, path: str | os.PathLike[str]) -> LocalIndex:
        root = resolve_project_path(path)
        if not root.exists():
            raise FileNotFoundError(f"search corpus {str(path)!r} does not exist (looked at {root}). Fix: set "
                                    "harness.tool_options.search.corpus to a directory of .txt/.md/.jsonl files.")
        key = str(root.resolve())
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(root)
            return cls._cache[key]

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for d in self.docs:
            h.update(json.dumps(d, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def search(self, query: str, k: int = 3, snippet_tokens: int = 24) -> list[SearchHit]:
        terms = [t for t in _TOKEN.findall(query.lower()) if t not in _STOP] or _TOKEN.findall(query.lower())
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in dict.fromkeys(terms))
        with self._lock:
            rows = self.db.execute(
                "SELECT id, title, url, snippet(docs, 2, '', '', ' ... ', ?), bm25(docs) FROM docs "
                "WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?", (snippet_tokens, match, k)).fetchall()
        return [SearchHit(id=r[0], title=r[1], url=r[2], snippet=" ".join(r[3].split()), score=round(-float(r[4]), 4)) for r in rows]

    def get(self, doc_id: str) -> dict[str, str] | None:
        return self.by_id.get(doc_id.removeprefix(CORPUS_SCHEME))


def http_search(backend: str, query: str, k: int, api_key: str, timeout_s: float = 20.0) -> list[SearchHit]:
    """Serper (google.serper.dev) or Tavily (api.tavily.com) web search, run on the host.

    API keys stay on the host: they are never passed into a sandbox.
    """
    import httpx  # deferred: only the web-search backends use it

    if backend == "serper":
        resp = httpx.post("https://google.serper.dev/search", json={"q": query, "num": k},
                          headers={"X-API-KEY": api_key, "Content-Type": "application/json"}, timeout=timeout_s)
        resp.raise_for_status()
        items = resp.json().get("organic", [])[:k]
        return [SearchHit(id=it.get("link", ""), title=it.get("title", ""), url=it.get("link", ""),
                          snippet=it.get("snippet", "")) for it in items]
    if backend == "tavily":
        resp = httpx.post("https://api.tavily.com/search", json={"api_key": api_key, "query": query, "max_results": k},
                          timeout=timeout_s)
        resp.raise_for_status()
        items = resp.json().get("results", [])[:k]
        return [SearchHit(id=it.get("url", ""), title=it.get("title", ""), url=it.get("url", ""),
                          snippet=(it.get("content") or "")[:500], score=float(it.get("score") or 0)) for it in items]
    raise ValueError(f"unknown search backend {backend!r}: local, serper or tavily")


KEY_ENV = {"serper": "SERPER_API_KEY", "tavily": "TAVILY_API_KEY"}


def choose_backend(options: dict[str, Any]) -> str:
    """``backend: auto`` picks serper or tavily when its key is set, else the local index."""
    backend = str(options.get("backend", "local"))
    if backend != "auto":
        return backend
    for name in ("serper", "tavily"):
        if os.environ.get(options.get("api_key_env") or KEY_ENV[name]):
            return name
    return "local"
