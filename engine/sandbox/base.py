"""The one async interface every sandbox backend implements."""

from __future__ import annotations

import abc
import asyncio
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from engine.sandbox.models import ExecResult, KilledReason, SandboxPoolConfig
from engine.sandbox.teardown import REGISTRY

Command = Sequence[str] | str
Files = Mapping[str, str | bytes]

#: Environment every sandboxed process gets, and nothing else from the host.
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
READ_FILE_MAX_BYTES = 64 * 1024 * 1024


class SandboxError(RuntimeError):
    """The sandbox itself failed (could not start, broke down): not the code's fault.

    ``kind`` is the instance error kind the record keeps (docs/architecture.md, "Sandboxes").
    """

    kind: ClassVar[str] = "sandbox"


class SandboxUnavailableError(SandboxError):
    """No host of the pool can run the execution (daemon down, bwrap broken): it did not run."""

    kind: ClassVar[str] = "sandbox_unavailable"


class InputFilesError(PermissionError):
    """Input files could not be written into the work dir (e.g. through a planted symlink)."""


def to_argv(command: Command) -> list[str]:
    """A list is run as-is; a string is run by ``/bin/sh -c``."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    argv = [str(a) for a in command]
    if not argv:
        raise ValueError("empty command")
    return argv


def classify_exit(exit_code: int | None, *, timed_out: bool, truncated: bool,
                  killed_by_us: bool = False, oom: bool = False
                  ) -> tuple[KilledReason | None, str | None]:
    """Map an exit to (killed_reason, detail). Signal deaths are reported as 128+N."""
    if timed_out:
        return "timeout", "wall-clock time limit exceeded"
    if truncated:
        return "output_limit", "output byte limit exceeded"
    if oom:
        return "memory_limit", "killed by the out-of-memory killer"
    if exit_code is not None and 128 < exit_code < 128 + 65:
        sig = exit_code - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGXCPU:
            return "cpu_limit", f"CPU time limit exceeded ({name})"
        if sig == signal.SIGXFSZ:
            return "file_size_limit", f"file size limit exceeded ({name})"
        if sig == signal.SIGKILL and not killed_by_us:
            return "signal", f"{name} (CPU hard limit, memory limit or the code itself)"
        return "signal", name
    return None, None


def normalize_returncode(rc: int | None) -> int | None:
    """asyncio reports signal deaths as -N; sandboxes report 128+N everywhere."""
    if rc is None:
        return None
    return 128 - rc if rc < 0 else rc


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class Sandbox(abc.ABC):
    """One sandbox instance. Not safe for concurrent ``exec`` calls: a pool hands it to one user.

    Lifecycle: ``start`` → (``exec`` | ``read_file`` | ``reset``)* → ``stop``. ``reset`` kills
    every process the sandbox runs and gives it a fresh, empty work dir (warm reuse).
    """

    backend: ClassVar[str]

    def __init__(self, config: SandboxPoolConfig, index: int = 0) -> None:
        self.config = config
        self.limits = config.limits
        self.index = index
        self.started = False
        self.stopped = False
        self.executions = 0

    @property
    def name(self) -> str:
        return f"{self.config.name}#{self.index}"

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def exec(self, command: Command, stdin: str | bytes | None = None,
                   files: Files | None = None, timeout_s: float | None = None) -> ExecResult:
        """Run ``command`` in the work dir after writing ``files`` (paths relative to it)."""

    @abc.abstractmethod
    async def read_file(self, path: str) -> bytes:
        """Bytes of a file in the work dir (relative path); symlinks are not followed."""

    @abc.abstractmethod
    async def reset(self) -> None:
        """Kill every process and replace the work dir with an empty one."""

    async def stop(self) -> None:
        """Kill everything and release all resources. Idempotent."""
        if self.stopped or not self.started:
            self.stopped = True
            REGISTRY.discard(self)
            return
        await self._call(self.kill_sync)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run blocking ``fn`` off the event loop (a backend may use an executor of its own)."""
        return await asyncio.to_thread(fn, *args, **kw)

    @abc.abstractmethod
    def kill_sync(self) -> None:
        """Best-effort synchronous teardown for signal handlers and atexit. Idempotent."""

    def _timeout(self, timeout_s: float | None) -> float:
        return float(timeout_s) if timeout_s is not None else self.limits.wall_time_s

    def _result(self, *, exit_code: int | None, stdout: bytes, stderr: bytes, timed_out: bool,
                truncated: bool, duration_s: float, killed_by_us: bool = False,
                oom: bool = False) -> ExecResult:
        reason, detail = classify_exit(exit_code, timed_out=timed_out, truncated=truncated,
                                       killed_by_us=killed_by_us, oom=oom)
        self.executions += 1
        return ExecResult(exit_code=exit_code, stdout=decode(stdout), stderr=decode(stderr),
                          timed_out=timed_out, killed_reason=reason, reason_detail=detail,
                          duration_s=round(duration_s, 6), truncated=truncated,
                          backend=self.backend, pool=self.config.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
