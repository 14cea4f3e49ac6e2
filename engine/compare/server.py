"""A loopback web viewer: a single static page plus a small JSON API over one comparison or series."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlparse

from engine.compare.models import SeriesReport
from engine.compare.paired import Comparison
from engine.compare.query import FILTERS, SORTS, QueryIndex
from engine.compare.report import series_csv, to_csv

STATIC = {"/": ("viewer.html", "text/html; charset=utf-8"), "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
          "/plots.js": ("plots.js", "text/javascript; charset=utf-8"),
          "/viewer.css": ("viewer.css", "text/css; charset=utf-8")}
QUESTION_CSV_FIELDS = ("task_spec", "instance_id", "score_a", "score_b", "delta", "status", "note")


@dataclass
class ViewerState:
    comparison: Comparison | None = None
    series: SeriesReport | None = None
    index: QueryIndex | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.comparison is not None:
            self.index = QueryIndex(self.comparison.table)


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _csv_cell(v: Any) -> str:
    s = "" if v is None else str(v)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


class Handler(BaseHTTPRequestHandler):
    state: ViewerState  # set on the subclass made by make_server
    server_version = "evalbench-compare/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: bytes, ctype: str, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(json.dumps(_clean(obj)).encode(), "application/json", status)

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        qs = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._route(url.path, qs)
        except (ValueError, IndexError, KeyError) as e:
            self._error(HTTPStatus.BAD_REQUEST, f"{type(e).__name__}: {e}")

    def _route(self, path: str, qs: dict[str, str]) -> None:
        st = self.state
        if path in STATIC:
            name, ctype = STATIC[path]
            self._send((files("engine.compare") / "static" / name).read_bytes(), ctype)
        elif path == "/favicon.ico":
            self._send(b"", "image/x-icon", HTTPStatus.NO_CONTENT)
        elif path == "/api/overview":
            self._json({
                "mode": "series" if st.comparison is None else "compare",
                "report": json.loads(st.comparison.report.model_dump_json()) if st.comparison else None,
                "series": json.loads(st.series.model_dump_json()) if st.series else None,
                "filters": FILTERS, "sorts": SORTS,
            })
        elif path in ("/api/questions", "/export/questions.csv"):
            if st.index is None:
                return self._error(HTTPStatus.NOT_FOUND, "no comparison loaded (series mode)")
            task = int(qs["task"]) if qs.get("task", "") != "" else None
            idx = st.index.select(task, qs.get("filter", "all"), qs.get("q", ""), qs.get("sort", "task"))
            if path.endswith(".csv"):
                lines = [",".join(QUESTION_CSV_FIELDS)]
                for i in idx:
                    r = st.index.row(int(i)).model_dump()
                    lines.append(",".join(_csv_cell(r[k]) for k in QUESTION_CSV_FIELDS))
                body = ("\n".join(lines) + "\n").encode()
                return self._send(body, "text/csv; charset=utf-8", headers={"Content-Disposition": 'attachment; filename="questions.csv"'})
            page = st.index.page(idx, int(qs.get("page", 1)), int(qs.get("per_page", 50)))
            self._json(json.loads(page.model_dump_json()))
        elif path == "/api/question":
            if st.index is None:
                return self._error(HTTPStatus.NOT_FOUND, "no comparison loaded (series mode)")
            self._json(st.index.detail(int(qs["row"])))
        elif path == "/export/overview.csv" and st.comparison is not None:
            self._send(to_csv(st.comparison.report).encode(), "text/csv; charset=utf-8",
                       headers={"Content-Disposition": 'attachment; filename="comparison.csv"'})
        elif path == "/export/series.csv" and st.series is not None:
            self._send(series_csv(st.series).encode(), "text/csv; charset=utf-8",
                       headers={"Content-Disposition": 'attachment; filename="series.csv"'})
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")


def make_server(state: ViewerState, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server bound to loopback (port 0: any free port). Call serve_forever() or use start_in_thread."""
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def server_url(server: ThreadingHTTPServer) -> str:
    # server_address is typed str | bytes; the bound socket knows the numeric host and the real port.
    host, port = server.socket.getsockname()[:2]
    return f"http://{host}:{port}/"


def start_in_thread(state: ViewerState, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    server = make_server(state, port=port)
    threading.Thread(target=server.serve_forever, daemon=True, name="compare-viewer").start()
    return server, server_url(server)
