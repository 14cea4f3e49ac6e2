"""``docker`` backend: warm containers through the Docker SDK.

Each sandbox is one long-lived container (``sleep infinity`` under docker-init) with: no network
unless granted, a memory+swap cgroup limit, a CPU quota, a pids limit, rlimits (CPU, file size,
open files, core, address space via the exec wrapper), a read-only root filesystem with tmpfs
``/work`` and ``/tmp``, all capabilities dropped, ``no-new-privileges``, and executions run as
uid 65534. Executions are ``docker exec`` calls streamed over the hijacked socket so that the
output cap and the wall-clock timeout are enforced while the code runs. After every execution
all processes of the sandbox uid are killed (``kill -9 -1``); a container that cannot be cleaned
(e.g. its pids are exhausted) is replaced. Every container carries the ``evalbench.sandbox``
label (and its owner host:pid), so teardown finds and removes leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import socket
import struct
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from engine.sandbox._files import _split_rel
from engine.sandbox.base import (
    READ_FILE_MAX_BYTES,
    Command,
    Files,
    InputFilesError,
    Sandbox,
    SandboxError,
    to_argv,
)
from engine.sandbox.models import DockerHost, ExecResult, SandboxPoolConfig
from engine.sandbox.teardown import REGISTRY

LABEL = "evalbench.sandbox"
OWNER_LABEL = "evalbench.owner"
POOL_LABEL = "evalbench.pool"
USER = "65534:65534"
WORK_TMPFS_MB = 256
_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="evalbench-docker")
REMOVE_WITHIN_S = 15.0  # how long a container's removal is retried (and waited for) at teardown
# One `kill -9 -1` pass can lose a race with a fork bomb's new children: repeat until kill finds
# nothing left to signal (bounded).
_KILL_ALL = "for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do kill -9 -1 2>/dev/null || break; done; "
_WIPE = (_KILL_ALL + "chmod -R u+rwX /work /tmp 2>/dev/null; "
         "rm -rf /work/..?* /work/.[!.]* /work/* /tmp/..?* /tmp/.[!.]* /tmp/* 2>/dev/null; ")


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@functools.lru_cache(maxsize=None)
def client(host: DockerHost | None = None, timeout: int = 120) -> Any:
    """A client of ``host`` (None: DOCKER_HOST or the local daemon), one per host per process."""
    import docker  # imported lazily: only docker pools pay for it

    if host is None:
        return docker.from_env(timeout=timeout)
    tls: Any = False
    if host.tls_verify or host.client_cert:
        cert = (host.client_cert, host.client_key) if host.client_cert and host.client_key else None
        tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=host.ca_cert,
                                   verify=host.ca_cert or host.tls_verify)
    return docker.DockerClient(base_url=host.url, tls=tls, timeout=timeout,
                               use_ssh_client=host.url.startswith("ssh://"))


def docker_unavailable_reason(host: DockerHost | None = None) -> str | None:
    """None when a Docker daemon answers, else why not."""
    try:
        client(host).ping()
    except Exception as e:  # noqa: BLE001
        return f"docker daemon not reachable: {type(e).__name__}: {e}"
    return None


def remove_containers(*, owner: str | None = None, dead_owners_only: bool = False,
                      host: DockerHost | None = None) -> int:
    """Force-remove labelled sandbox containers (all, one owner's, or those of dead owners)."""
    filters = {"label": [LABEL]}
    if owner is not None:
        filters["label"].append(f"{OWNER_LABEL}={owner}")
    n = 0
    for c in client(host).containers.list(all=True, filters=filters):
        if dead_owners_only:
            machine, _, pid = (c.labels.get(OWNER_LABEL) or "").rpartition(":")
            if machine != socket.gethostname() or not pid.isdigit() or _pid_alive(int(pid)):
                continue
        with contextlib.suppress(Exception):
            c.remove(force=True)
            n += 1
    return n


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tar(files: Files) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel, data in files.items():
            payload = data.encode() if isinstance(data, str) else bytes(data)
            info = tarfile.TarInfo("work/" + "/".join(_split_rel(rel)))
            info.size, info.mode, info.mtime = len(payload), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


class _Stream:
    """Outcome of one streamed exec."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.timed_out = False
        self.truncated = False
        self.exit_code: int | None = None


class DockerSandbox(Sandbox):
    backend: ClassVar[str] = "docker"

    def __init__(self, config: SandboxPoolConfig, index: int = 0,
                 host: DockerHost | None = None) -> None:
        super().__init__(config, index)
        self.host = host  # None: DOCKER_HOST or the local daemon
        self._container: Any = None
        self._lock = threading.Lock()
        self._removed = threading.Event()  # set once no container of this sandbox is left
        self._removed.set()
        # reset() is lazy: the next exec's shell wipes /work and /tmp first (saves one exec).
        self._dirty = False

    @property
    def name(self) -> str:
        return f"{super().name}@{self.host.url}" if self.host else super().name

    @property
    def container_id(self) -> str | None:
        return self._container.id if self._container is not None else None

    # -- lifecycle -------------------------------------------------------------------------
    def _create(self) -> Any:
        import docker  # deferred: only docker pools pay for the SDK

        lim = self.limits
        mem = f"{lim.memory_mb + WORK_TMPFS_MB}m"
        ulimits = [docker.types.Ulimit(name="cpu", soft=lim.cpu_s, hard=lim.cpu_s + 1),
                   docker.types.Ulimit(name="fsize", soft=lim.file_size_mb << 20,
                                       hard=lim.file_size_mb << 20),
                   docker.types.Ulimit(name="nofile", soft=lim.open_files, hard=lim.open_files),
                   docker.types.Ulimit(name="core", soft=0, hard=0)]
        return client(self.host).containers.run(
            self.config.effective_image, ["sleep", "infinity"], detach=True, init=True,
            labels={LABEL: "1", OWNER_LABEL: owner_tag(), POOL_LABEL: self.config.name},
            network_mode="bridge" if lim.network else "none", hostname="sandbox",
            mem_limit=mem, memswap_limit=mem, pids_limit=lim.max_procs + 8,
            nano_cpus=int(lim.cpus * 1e9), read_only=True, working_dir="/work",
            tmpfs={"/work": f"rw,exec,nosuid,nodev,size={WORK_TMPFS_MB}m,uid=65534,gid=65534,"
                            "mode=0700",
                   "/tmp": "rw,exec,nosuid,nodev,size=64m,mode=1777"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"], ulimits=ulimits,
        )

    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_EXECUTOR, functools.partial(fn, *args, **kw))

    async def start(self) -> None:
        if self.started:
            return
        self._removed.clear()
        try:
            self._container = await self._call(self._create)
        except Exception as e:
            self._removed.set()
            raise SandboxError(f"{self.name}: cannot start container: {e}") from e
        self.started = True
        REGISTRY.add(self)
        if self.stopped:  # stopped (torn down) while the container was being created
            self.stopped = False
            await self.stop()
            raise SandboxError(f"{self.name} was stopped while starting")

    def _replace_sync(self) -> None:
        with self._lock:
            old, self._container = self._container, None
        if old is not None:
            with contextlib.suppress(Exception):
                old.remove(force=True)
        if self.stopped:  # torn down meanwhile (a stop killed the exec this cleans up after): no new container
            self._removed.set()
            return
        fresh = self._create()
        with self._lock:
            if not self.stopped:
                self._container, fresh = fresh, None
        if fresh is not None:  # torn down while it was being created
            with contextlib.suppress(Exception):
                fresh.remove(force=True)
            self._removed.set()
        self._dirty = False

    def kill_sync(self) -> None:
        """Remove the container; idempotent, and safe from a signal handler or atexit. A second
        caller (the exit's teardown while a pool's own `stop` is removing it on a worker thread)
        waits for that removal instead of returning at once: the process must not end first and
        leave the container running (docs/architecture.md, "Stopping a run")."""
        with self._lock:
            self.stopped = True
            c, self._container = self._container, None
        if c is None:
            self._removed.wait(timeout=REMOVE_WITHIN_S)
            return
        try:
            deadline = time.monotonic() + REMOVE_WITHIN_S
            while True:  # a daemon busy with the exec being killed may refuse once: retry, bounded
                try:
                    c.remove(force=True)
                    break
                except Exception as err:  # noqa: BLE001 - NotFound is done; anything else is retried to the deadline
                    if type(err).__name__ == "NotFound" or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
        finally:
            self._removed.set()
            REGISTRY.discard(self)

    # -- exec ------------------------------------------------------------------------------
    def _exec_sync(self, argv: list[str], *, stdin: bytes | None, timeout_s: float,
                   cap: int) -> _Stream:
        api = client(self.host).api
        res = _Stream()
        ex = api.exec_create(self.container_id, argv, stdout=True, stderr=True,
                             stdin=stdin is not None, tty=False, user=USER, workdir="/work",
                             environment={"HOME": "/work", "TMPDIR": "/tmp",
                                          "PYTHONDONTWRITEBYTECODE": "1",
                                          "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        sockio = api.exec_start(ex["Id"], socket=True)
        raw: socket.socket = sockio._sock
        writer: threading.Thread | None = None
        try:
            if stdin is not None:
                def _feed() -> None:
                    with contextlib.suppress(OSError):
                        raw.sendall(stdin)
                        raw.shutdown(socket.SHUT_WR)
                writer = threading.Thread(target=_feed, daemon=True)
                writer.start()
            self._read_frames(raw, res, deadline, cap)
        finally:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sockio.close()
                raw.close()
        if not (res.timed_out or res.truncated):
            for _ in range(50):
                info = api.exec_inspect(ex["Id"])
                if not info.get("Running") and info.get("ExitCode") is not None:
                    res.exit_code = int(info["ExitCode"])
                    break
                time.sleep(0.01)
        return res

    @staticmethod
    def _read_frames(raw: socket.socket, res: _Stream, deadline: float, cap: int) -> None:
        pending = b""
        room = cap
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                res.timed_out = True
                return
            raw.settimeout(min(left, 0.5))
            try:
                chunk = raw.recv(1 << 16)
            except socket.timeout:
                continue
            if not chunk:
                return
            pending += chunk
            while len(pending) >= 8:
                kind, size = struct.unpack(">BxxxL", pending[:8])
                if len(pending) < 8 + size:
                    break
                payload, pending = pending[8:8 + size], pending[8 + size:]
                target = res.err if kind == 2 else res.out
                if room > 0:
                    target += payload[:room]
                room -= len(payload)
                if room < 0:
                    res.truncated = True
                    return

    def _clean_sync(self, *, wipe: bool) -> None:
        """Kill every sandbox process (and wipe /work, /tmp); replace the container if stuck."""
        script = (_WIPE if wipe else _KILL_ALL) + "exit 0"
        try:
            r = self._exec_sync(["/bin/sh", "-c", script], stdin=None, timeout_s=10, cap=65536)
            if r.timed_out or r.exit_code != 0:
                raise SandboxError("cleanup failed")
        except Exception:  # noqa: BLE001 - e.g. no pid left to start the cleanup: replace
            self._replace_sync()

    def _run_sync(self, argv: list[str], stdin: bytes | None, tar: bytes | None,
                  timeout_s: float) -> tuple[_Stream, float]:
        wipe, self._dirty = (_WIPE if self._dirty else ""), False
        if tar is not None:
            up = self._exec_sync(["/bin/sh", "-c", wipe + "tar -x -m -C / -f -"],
                                 stdin=tar, timeout_s=60, cap=65536)
            if up.exit_code != 0:
                raise InputFilesError(f"cannot write input files: "
                                      f"{bytes(up.err).decode('utf-8', 'replace').strip()}")
            wipe = ""
        lim = self.limits
        wrapper = (f'{wipe}ulimit -v {lim.memory_mb * 1024} 2>/dev/null; "$@"; rc=$?; '
                   "kill -9 -1 2>/dev/null; exit $rc")
        t0 = time.monotonic()
        res = self._exec_sync(["/bin/sh", "-c", wrapper, "sh", *argv], stdin=stdin,
                              timeout_s=timeout_s, cap=lim.output_bytes)
        duration = time.monotonic() - t0
        if res.timed_out or res.truncated or res.exit_code is None or res.exit_code >= 128:
            self._clean_sync(wipe=False)  # the wrapper may not have run its own kill
        return res, duration

    async def exec(self, command: Command, stdin: str | bytes | None = None,
                   files: Files | None = None, timeout_s: float | None = None) -> ExecResult:
        if not self.started or self.stopped or self._container is None:
            raise SandboxError(f"{self.name} is not running")
        data = stdin.encode() if isinstance(stdin, str) else stdin
        tar = _tar(files) if files else None  # validates the paths (ValueError)
        argv = to_argv(command)
        try:
            res, duration = await self._call(self._run_sync, argv, data, tar,
                                             self._timeout(timeout_s))
        except (SandboxError, InputFilesError):
            raise
        except Exception as e:
            raise SandboxError(f"{self.name}: docker exec failed: {e}") from e
        if res.exit_code is None and not (res.timed_out or res.truncated):
            # The stream ended without an exit status (the connection to the daemon was cut):
            # the execution's outcome is unknown, which must never read as a failing verdict.
            raise SandboxError(f"{self.name}: the execution's stream ended without an exit status")
        result = self._result(exit_code=137 if res.timed_out else res.exit_code,
                              stdout=bytes(res.out), stderr=bytes(res.err),
                              timed_out=res.timed_out, truncated=res.truncated,
                              duration_s=duration)
        return result.model_copy(update={"host": self.host.url}) if self.host else result

    async def read_file(self, path: str) -> bytes:
        rel = "/".join(_split_rel(path))
        if self._dirty:  # reset and not used since: the work dir is (about to be) empty
            raise FileNotFoundError(path)
        res = await self._call(self._exec_sync, ["cat", "--", f"/work/{rel}"], stdin=None,
                               timeout_s=30, cap=READ_FILE_MAX_BYTES)
        if res.truncated:
            raise ValueError(f"{path!r} is larger than {READ_FILE_MAX_BYTES} bytes")
        if res.exit_code != 0:
            msg = bytes(res.err).decode("utf-8", "replace")
            if "No such file" in msg:
                raise FileNotFoundError(path)
            raise PermissionError(f"{path!r}: {msg.strip()}")
        return bytes(res.out)

    async def reset(self) -> None:
        if not self.started or self.stopped:
            raise SandboxError(f"{self.name} is not running")
        self._dirty = True
