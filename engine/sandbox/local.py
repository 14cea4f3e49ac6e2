"""``local`` backend: a subprocess with rlimits in a throwaway work dir.

What it enforces: an empty environment (no host variables), a private work dir (cwd, HOME,
TMPDIR), rlimits (CPU, address space, file size, open files, core; processes when root), a
wall-clock timeout, an output byte cap, and killing every process it started (process group and
session; when the engine runs as root, every process of the sandbox's dedicated uid, which also
reaches ``setsid``/double-fork escapees).

What it cannot enforce, honestly: network isolation, and hiding world-readable host files. Run as
root it drops to a dedicated unprivileged uid, so root-only files (``/etc/shadow``), the engine's
own process (signals) and root-owned directories are out of reach; world-writable places such as
``/tmp`` remain writable. Use ``bwrap`` or ``docker`` for untrusted code that must not see them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import ClassVar

from engine.sandbox import _files, _proc
from engine.sandbox.base import (
    READ_FILE_MAX_BYTES,
    SANDBOX_PATH,
    Command,
    Files,
    InputFilesError,
    Sandbox,
    SandboxError,
    normalize_returncode,
    to_argv,
)
from engine.sandbox.models import ExecResult, SandboxPoolConfig
from engine.sandbox.teardown import REGISTRY


class HostProcessSandbox(Sandbox):
    """Shared machinery of the backends that run host processes (local, bwrap)."""

    backend: ClassVar[str] = "local"

    def __init__(self, config: SandboxPoolConfig, index: int = 0) -> None:
        super().__init__(config, index)
        self._lease: _proc.UidLease | None = None
        self._outer: str | None = None
        self._work: str | None = None

    # -- hooks for subclasses --------------------------------------------------------------
    def _wrap(self, argv: list[str]) -> list[str]:
        return argv

    def _env(self) -> dict[str, str]:
        assert self._work is not None
        return {"PATH": SANDBOX_PATH, "HOME": self._work, "TMPDIR": self._work,
                "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def uid(self) -> int | None:
        return self._lease.uid if self._lease is not None else None

    @property
    def workdir(self) -> str:
        if self._work is None:
            raise SandboxError(f"{self.name} is not started")
        return self._work

    async def start(self) -> None:
        if self.started:
            return
        if self.stopped:
            raise SandboxError(f"{self.name} was stopped")
        self._lease = _proc.lease_uid()
        self._outer, self._work = _files.make_workdir(f"evalbench-{self.backend}-", self.uid)
        self.started = True
        REGISTRY.add(self)

    def _kill_all(self, pid: int | None = None) -> bool:
        """Kill every process of the sandbox; False if unreaped zombies still hold its uid."""
        if self.uid is not None:  # every process of the sandbox runs as its dedicated uid
            # No waiting for zombies here: bwrap leaves its namespace init to be reaped by the
            # host's init (which may take a second); reset() rotates to a fresh uid instead.
            return _proc.kill_uid(self.uid, reap_wait_s=0.0)
        if pid is not None and pid > 0:
            _proc.kill_session(pid)
        return True

    async def exec(self, command: Command, stdin: str | bytes | None = None,
                   files: Files | None = None, timeout_s: float | None = None) -> ExecResult:
        if not self.started or self.stopped:
            raise SandboxError(f"{self.name} is not running")
        work = self.workdir
        for rel, data in (files or {}).items():
            try:
                _files.safe_write(work, rel, data, owner=self.uid)
            except OSError as e:
                raise InputFilesError(f"cannot write input file {rel!r}: {e}") from e
        argv = self._wrap(to_argv(command))
        stdin_bytes = stdin.encode() if isinstance(stdin, str) else stdin
        raw = await _proc.run_capped(
            argv, env=self._env(), cwd=work, stdin=stdin_bytes, timeout_s=self._timeout(timeout_s),
            output_bytes=self.limits.output_bytes,
            preexec=_proc.make_preexec(self.limits, dedicated_uid=self.uid is not None),
            uid=self.uid, kill=self._kill_all,
        )
        return self._result(exit_code=normalize_returncode(raw.returncode), stdout=raw.stdout,
                            stderr=raw.stderr, timed_out=raw.timed_out, truncated=raw.truncated,
                            duration_s=raw.duration_s)

    async def read_file(self, path: str) -> bytes:
        return await asyncio.to_thread(_files.safe_read, self.workdir, path,
                                       max_bytes=READ_FILE_MAX_BYTES)

    def _fresh_workdir(self) -> None:
        clean = self._kill_all()
        if self.uid is not None:
            self._scrub_uid_files()
            if not clean:
                # Killed processes not yet reaped by init still count against RLIMIT_NPROC:
                # move to a fresh uid rather than wait for them.
                old, self._lease = self._lease, _proc.lease_uid()
                if old is not None:
                    old.release()
        if self._outer is not None:
            shutil.rmtree(self._outer, ignore_errors=True)
        self._outer, self._work = _files.make_workdir(f"evalbench-{self.backend}-", self.uid)

    def _scrub_uid_files(self) -> None:
        """Remove what the sandbox uid left in world-writable temp dirs (local backend only)."""

    async def reset(self) -> None:
        if not self.started or self.stopped:
            raise SandboxError(f"{self.name} is not running")
        await asyncio.to_thread(self._fresh_workdir)

    def kill_sync(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            self._kill_all()
            if self.uid is not None:
                self._scrub_uid_files()
            if self._outer is not None:
                shutil.rmtree(self._outer, ignore_errors=True)
        finally:
            if self._lease is not None:
                self._lease.release()
            REGISTRY.discard(self)


class LocalSandbox(HostProcessSandbox):
    backend: ClassVar[str] = "local"

    def _scrub_uid_files(self) -> None:
        uid = self.uid
        for tmp in ("/tmp", "/var/tmp", "/dev/shm"):
            try:
                entries = list(os.scandir(tmp))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                except OSError:
                    continue
