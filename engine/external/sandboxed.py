"""SandboxedExternalEval: the benchmark's own loop inside a Docker container built for it
(docs/architecture.md, "External evals").

The container runs the wrapper's image (engine/external/images.py) with no network at all
(`network_mode=none`: only its own loopback). Its one way out is the model gateway's unix socket,
mounted read-only at /gateway; `container_entry.py` (mounted read-only too) relays
127.0.0.1:`PROXY_PORT` inside the container to that socket, then runs the benchmark. The limits are
those of the docker sandboxes (memory+swap, CPU quota, pids, open files, file size; read-only root,
tmpfs /tmp, every capability dropped, no-new-privileges, an unprivileged uid). The work directory
(inputs written by the wrapper, the benchmark's results) is a host folder mounted at /work, read back
and parsed on the host after the container exits. The container is registered with the sandbox
teardown registry and carries the sandbox labels: it is removed on exit, error, timeout, SIGINT and
SIGTERM, and `remove_containers(dead_owners_only=True)` reaps one whose engine was killed.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.config.errors import ConfigError
from engine.sandbox.docker_backend import LABEL, OWNER_LABEL, POOL_LABEL, client, owner_tag
from engine.sandbox.models import SandboxLimits
from engine.sandbox.teardown import REGISTRY, signal_teardown

WORK = "/work"  # the wrapper's work directory inside the container
GATEWAY_DIR = "/gateway"
SOCKET_NAME = "gateway.sock"
ENTRY = "/evalbench/entry.py"
PROXY_PORT = 8765  # inside the container's own network namespace: any free port will do
ENTRY_SOURCE = Path(__file__).resolve().parent / "container_entry.py"
TMPFS_MB = 512
POLL_S = 0.25
# Defaults for a whole benchmark (not one snippet of code): `external.args.limits` overrides them.
DEFAULT_LIMITS = {"memory_mb": 2048, "max_procs": 512, "cpus": 1.0, "open_files": 1024, "file_size_mb": 256,
                  "wall_time_s": 3600.0, "cpu_s": 36000}


def container_limits(args: dict[str, Any]) -> SandboxLimits:
    given = args.get("limits") or {}
    try:
        limits = SandboxLimits(**{**DEFAULT_LIMITS, **given})
    except (ValidationError, TypeError) as err:
        raise ConfigError(
            f"`task.external.args.limits` is {given!r}, which is not a valid set of container limits ({err}). Fix: "
            "use the keys of the sandbox limits (memory_mb, max_procs, cpus, open_files, file_size_mb) with "
            "positive numbers."
        ) from None
    if limits.network:
        raise ConfigError(
            "`task.external.args.limits.network` is true, but a sandboxed external eval reaches only the model "
            "gateway. Fix: remove it (run the benchmark on the host, as an ExternalEval, if it needs the network)."
        )
    return limits


def _user() -> str:
    # As root, the benchmark runs as nobody; otherwise as the caller, so the caller can delete its output.
    return "65534:65534" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"


REMOVE_RETRY_S = 15.0  # how long a failing removal is retried before the reaper is left to it


class ExternalContainer:
    """One benchmark run in its container; `kill_sync` (teardown registry) removes it."""

    def __init__(self, image: str, argv: list[str], env: dict[str, str], workdir: Path, gateway_dir: Path,
                 limits: SandboxLimits, wrapper: str) -> None:
        self.image, self.argv, self.env = image, argv, env
        self.workdir, self.gateway_dir, self.limits, self.wrapper = workdir, gateway_dir, limits, wrapper
        self.container: Any = None
        self.stopped = False
        # Named up front: a teardown that comes while docker is creating it still finds it by name.
        self.name = f"evalbench-ext-{wrapper.replace('_', '-')}-{uuid.uuid4().hex[:12]}"
        self._creating = False

    def start_sync(self) -> None:
        import docker  # deferred: only docker users pay for the SDK

        lim = self.limits
        mem = f"{lim.memory_mb + TMPFS_MB}m"
        command = ["python3", ENTRY, "--socket", f"{GATEWAY_DIR}/{SOCKET_NAME}", "--port", str(PROXY_PORT), "--",
                   *self.argv]
        REGISTRY.add(self)  # before docker creates it: SIGTERM during the create still removes it
        self._creating = True
        try:
            self.container = client().containers.run(
                self.image, command, name=self.name, detach=True, init=True, network_mode="none",
                hostname="benchmark", labels={LABEL: "1", OWNER_LABEL: owner_tag(), POOL_LABEL: f"external:{self.wrapper}"},
                environment={"HOME": "/tmp", "TMPDIR": "/tmp", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
                             **self.env},
                user=_user(), working_dir=WORK, read_only=True,
                tmpfs={"/tmp": f"rw,exec,nosuid,nodev,size={TMPFS_MB}m,mode=1777"},
                volumes={str(self.workdir): {"bind": WORK, "mode": "rw"},
                         str(self.gateway_dir): {"bind": GATEWAY_DIR, "mode": "ro"},
                         str(ENTRY_SOURCE): {"bind": ENTRY, "mode": "ro"}},
                mem_limit=mem, memswap_limit=mem, pids_limit=lim.max_procs, nano_cpus=int(lim.cpus * 1e9),
                cap_drop=["ALL"], security_opt=["no-new-privileges"],
                ulimits=[docker.types.Ulimit(name="nofile", soft=lim.open_files, hard=lim.open_files),
                         docker.types.Ulimit(name="fsize", soft=lim.file_size_mb << 20, hard=lim.file_size_mb << 20),
                         docker.types.Ulimit(name="core", soft=0, hard=0)],
            )
        finally:
            self._creating = False
        if self.stopped:  # torn down (signal) while it was being created
            self._remove(wait_s=0.0)

    def exit_code_sync(self) -> int | None:
        """The exit code once the container has exited, else None."""
        self.container.reload()
        state = self.container.attrs.get("State", {})
        return None if state.get("Running") or state.get("Status") in ("created", "running") else int(state["ExitCode"])

    def logs_sync(self) -> tuple[bytes, bytes]:
        return (bytes(self.container.logs(stdout=True, stderr=False)),
                bytes(self.container.logs(stdout=False, stderr=True)))

    def kill_sync(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            self._remove(wait_s=10.0 if self._creating else 0.0)
        finally:
            REGISTRY.discard(self)

    def _remove(self, wait_s: float) -> None:
        """Remove the container by name. NotFound means gone, or (for `wait_s`, while docker may still
        be creating it) not there yet; any other failure (the daemon busy, e.g. still unmounting its
        filesystem) is retried for REMOVE_RETRY_S, never dropped at the first try."""
        import docker  # deferred: only docker users pay for the SDK

        now = time.monotonic()
        not_found_until, failing_until = now + wait_s, now + max(wait_s, REMOVE_RETRY_S)
        while True:
            try:
                client().api.remove_container(self.name, force=True)
                return
            except docker.errors.NotFound:
                if time.monotonic() >= not_found_until:
                    return
            except Exception:  # noqa: BLE001 - docker.errors.APIError, a timeout: the container may still exist
                if time.monotonic() >= failing_until:
                    return
            time.sleep(0.1)


async def run_in_container(container: ExternalContainer, timeout_s: float) -> tuple[int | None, bytes, bytes]:
    """(exit code, None on timeout; stdout; stderr). The container is removed however this ends."""
    with signal_teardown():
        try:
            await asyncio.to_thread(container.start_sync)
        except Exception as start_error:  # noqa: BLE001 - docker.errors.*: the run fails with the daemon's message
            container.kill_sync()
            return 125, b"", f"docker could not start the container: {start_error}".encode()
        try:
            deadline = time.monotonic() + timeout_s
            code: int | None = None
            while time.monotonic() < deadline and not container.stopped:
                code = await asyncio.to_thread(container.exit_code_sync)
                if code is not None:
                    break
                await asyncio.sleep(POLL_S)
            if container.stopped and code is None:
                return 137, b"", b"the container was torn down (signal)"
            out, err = await asyncio.to_thread(container.logs_sync)
            return code, out, err
        finally:
            await asyncio.to_thread(container.kill_sync)


def prepare_dirs(root: Path) -> tuple[Path, Path]:
    """(work dir mounted at /work, gateway socket dir mounted at /gateway) under `root`, writable by
    the container's user."""
    work, gateway = root / "work", root / "gateway"
    work.mkdir()
    gateway.mkdir()
    if os.getuid() == 0:
        os.chmod(work, 0o777)  # the container runs as nobody
    os.chmod(root, 0o755)
    os.chmod(gateway, 0o755)
    return work, gateway
