"""A Docker daemon that goes away on cue: a unix-socket proxy to the real daemon for fault injection.

It forwards the Docker API byte for byte until a given number of sandbox *executions* went through
(an exec whose command is the sandbox's execution wrapper, ``ulimit -v ...``; the clean-ups between
executions do not count). At the next one it dies the way a stopped daemon does: the request gets
no answer, every open connection is cut, and the socket file is gone, so later connections fail.
Deterministic: it counts requests, not time.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from pathlib import Path

REAL_DOCKER = "/var/run/docker.sock"
_EXEC_CREATE = re.compile(rb"^POST /(?:v[\d.]+/)?containers/[^/ ]+/exec ")
_WRAPPER = b"ulimit -v"


class DockerFaultProxy:
    """Serve ``path``; after ``executions`` sandbox executions (None: never) the daemon "stops"."""

    def __init__(self, path: Path, executions: int | None = None, upstream: str = REAL_DOCKER) -> None:
        self.path = path
        self.allowed = executions
        self.upstream = upstream
        self.seen = 0
        self.dead = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> DockerFaultProxy:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._listener.bind(str(self.path))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go away: no answer to anything in flight, no new connection."""
        self.dead.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with self._lock:
            socks, self._socks = list(self._socks), set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    # -- plumbing ----------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.dead.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self.dead.is_set():
                    client.close()
                    upstream.close()
                    return
                self._socks.update((client, upstream))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pending: bytes = b"") -> None:
        try:
            if pending:
                dst.sendall(pending)
            while chunk := src.recv(1 << 16):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to daemon, one HTTP request at a time; an upgraded (hijacked exec) stream is raw."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = client.recv(1 << 16)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                headers = head.lower()
                if b"\r\ntransfer-encoding: chunked" in headers or b"\r\nupgrade:" in headers:
                    self._pump(client, upstream, head + b"\r\n\r\n" + buf)  # a stream from here on
                    return
                length = re.search(rb"\r\ncontent-length: *(\d+)", headers)
                n = int(length.group(1)) if length else 0
                while len(buf) < n:
                    chunk = client.recv(1 << 16)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:n], buf[n:]
                if _EXEC_CREATE.match(head) and _WRAPPER in body:
                    with self._lock:
                        self.seen += 1
                        over = self.allowed is not None and self.seen > self.allowed
                    if over:
                        self.stop()
                        return
                upstream.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)


def remove_pool_containers(pool: str) -> None:
    """Containers the engine could not remove through a proxy that died (they live on the real
    daemon): removed by their pool label."""
    from engine.sandbox.docker_backend import POOL_LABEL, client  # docker: only these tests need it

    for c in client().containers.list(all=True, filters={"label": f"{POOL_LABEL}={pool}"}):
        with contextlib.suppress(Exception):
            c.remove(force=True)


def socket_dir() -> Path:
    """A short, world-readable directory for unix sockets (paths are limited to 108 bytes) and files a
    sandbox uid must reach."""
    d = Path(f"/tmp/evalbench-fault-{os.getpid()}")
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    return d
