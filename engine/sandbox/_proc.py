"""Host-process plumbing shared by the ``local`` and ``bwrap`` backends.

- Dedicated uids: when the engine runs as root, every sandbox instance gets its own unprivileged
  uid (61000 + slot, claimed with an ``flock`` so concurrent engine processes never share one).
  Killing "everything of that uid" then reaches processes that escaped the process group with
  ``setsid`` or a double fork, and RLIMIT_NPROC counts only that sandbox's processes.
- Without root there is no uid to switch to: processes are killed by process group and session.
- ``run_capped``: an asyncio subprocess with stdin, a wall-clock timeout and an output byte cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engine.sandbox.models import SandboxLimits

UID_BASE = 61000
UID_SLOTS = 2000
_LOCK_DIR_ROOT = "/run/evalbench-sandbox-uids"


def is_root() -> bool:
    return os.geteuid() == 0


@dataclass
class UidLease:
    """An exclusively held sandbox uid (released when the lock file descriptor is closed)."""

    uid: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


_cursor = -1


def lease_uid() -> UidLease | None:
    """Claim a free dedicated uid, or None when not running as root."""
    if not is_root():
        return None
    global _cursor
    os.makedirs(_LOCK_DIR_ROOT, mode=0o700, exist_ok=True)
    if _cursor < 0:
        _cursor = (os.getpid() * 7) % UID_SLOTS
    for _ in range(UID_SLOTS):
        # Walk forward: a uid just released may still hold zombies for a moment.
        uid = UID_BASE + _cursor
        _cursor = (_cursor + 1) % UID_SLOTS
        fd = os.open(os.path.join(_LOCK_DIR_ROOT, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        # A previous holder may have crashed and left processes behind: clear them, and skip
        # the uid while its zombies still count against RLIMIT_NPROC.
        if not kill_uid(uid, reap_wait_s=0.0):
            os.close(fd)
            continue
        return UidLease(uid=uid, fd=fd)
    raise RuntimeError("no free sandbox uid")


def reap_orphaned_uids() -> int:
    """Kill processes left in the sandbox uid range by a crashed engine (uid not leased now).

    An engine killed with SIGKILL cannot tear down: its bwrap sandboxes die with it, but local
    processes (and docker containers, see ``remove_containers``) stay until someone reaps them.
    """
    if not is_root() or not os.path.isdir(_LOCK_DIR_ROOT):
        return 0
    uids = {u for u, _, _ in filter(None, (_proc_owner_and_state(n) for n in os.listdir("/proc")
                                            if n.isdigit()))
            if UID_BASE <= u < UID_BASE + UID_SLOTS}
    n = 0
    for uid in sorted(uids):
        fd = os.open(os.path.join(_LOCK_DIR_ROOT, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # leased by a live engine
        try:
            kill_uid(uid, reap_wait_s=0.0)
            n += 1
        finally:
            os.close(fd)
    _remove_orphaned_workdirs()
    return n


def _remove_orphaned_workdirs() -> None:
    """Work dirs (``<tmp>/evalbench-{local,bwrap}-*/work``) whose uid nobody leases any more."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        if not name.startswith(("evalbench-local-", "evalbench-bwrap-")):
            continue
        outer = os.path.join(tmp, name)
        try:
            uid = os.stat(os.path.join(outer, "work"), follow_symlinks=False).st_uid
        except OSError:
            continue
        if not UID_BASE <= uid < UID_BASE + UID_SLOTS:
            continue
        fd = os.open(os.path.join(_LOCK_DIR_ROOT, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live engine's sandbox
        else:
            shutil.rmtree(outer, ignore_errors=True)
        finally:
            os.close(fd)


def _proc_owner_and_state(pid: str) -> tuple[int, str, int] | None:
    """(real uid, state letter, session id) of a process, or None if it vanished.

    Read from /proc/PID/status: the owner of /proc/PID is root for processes that are not
    dumpable (e.g. between a uid switch and exec), so it cannot be trusted.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    uid, state, sid = -1, "?", -1
    for line in status.splitlines():
        if line.startswith("State:"):
            state = line.split()[1]
        elif line.startswith("Uid:"):
            uid = int(line.split()[1])
        elif line.startswith("NSsid:"):
            sid = int(line.split()[1])
            break
    return uid, state, sid


def _scan(*, uid: int | None = None, sid: int | None = None) -> list[tuple[int, str]]:
    """(pid, state) of every process, zombies included, of a uid and/or a session id."""
    found: list[tuple[int, str]] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        info = _proc_owner_and_state(name)
        if info is None:
            continue
        if uid is not None and info[0] != uid:
            continue
        if sid is not None and info[2] != sid:
            continue
        found.append((int(name), info[1]))
    return found


def live_pids(*, uid: int | None = None, sid: int | None = None,
              zombies: bool = False) -> list[int]:
    """Processes (non-zombie unless ``zombies``) of a uid and/or a session id."""
    return [pid for pid, state in _scan(uid=uid, sid=sid) if zombies or state not in ("Z", "X")]


def kill_uid(uid: int, *, rounds: int = 200, reap_wait_s: float = 0.05) -> bool:
    """SIGKILL every process of ``uid`` until none is left.

    Returns True when the uid is entirely clean, False when unreaped zombies remain after a
    brief wait (init may take a second to reap them): until then they count against
    RLIMIT_NPROC of that uid, so callers that need a clean uid rotate to a fresh one.
    """
    for i in range(rounds):
        procs = _scan(uid=uid)
        live = [pid for pid, state in procs if state not in ("Z", "X")]
        if not live:
            if not procs:
                return True
            deadline = time.monotonic() + reap_wait_s
            while time.monotonic() < deadline:
                time.sleep(0.005)
                if not _scan(uid=uid):
                    return True
            return False
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        # Stopped or mid-fork processes need a moment; fork bombs are bounded by RLIMIT_NPROC.
        time.sleep(0.002 if i < 20 else 0.02)
    return not _scan(uid=uid)


def kill_session(sid: int, *, rounds: int = 50) -> bool:
    """SIGKILL a process group/session (processes that kept the sandbox's session id)."""
    for i in range(rounds):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGKILL)
        pids = live_pids(sid=sid)
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002 if i < 20 else 0.02)
    return not live_pids(sid=sid)


def make_preexec(limits: SandboxLimits, *, dedicated_uid: bool) -> Callable[[], None]:
    """rlimits applied in the child between fork and exec (after the uid switch)."""
    mem = limits.memory_mb * 1024 * 1024
    fsize = limits.file_size_mb * 1024 * 1024

    def _preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if dedicated_uid:
            # Counted per real uid: meaningful only when the uid belongs to this sandbox alone.
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_procs, limits.max_procs))
        os.umask(0o077)

    return _preexec


# ---- the capped subprocess runner --------------------------------------------------------------

@dataclass
class RawOutcome:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    truncated: bool
    duration_s: float
    pid: int = -1
    notes: list[str] = field(default_factory=list)


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Signals the main process's exit as soon as it is reaped (pipes may still be open)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


async def _drain(stream: asyncio.StreamReader, buf: bytearray, budget: list[int],
                 over: asyncio.Event) -> None:
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        room = budget[0]
        if room > 0:
            buf += chunk[:room]
        budget[0] = room - len(chunk)
        if budget[0] < 0:
            over.set()


async def run_capped(argv: Sequence[str], *, env: dict[str, str], cwd: str, stdin: bytes | None,
                     timeout_s: float, output_bytes: int, preexec: Callable[[], None],
                     uid: int | None, kill: Callable[[int], object]) -> RawOutcome:
    """Run argv; kill everything (``kill(pid)``) on timeout, output overflow or main-process exit.

    The main process exiting ends the execution: children it left behind are killed, so a
    sleeping daemon cannot hold the pipes open nor survive into the next execution.
    """
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _ExitAwareProtocol(limit=1 << 16, loop=loop), *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd,
        start_new_session=True, preexec_fn=preexec, close_fds=True,
        user=uid, group=uid, extra_groups=[] if uid is not None else None,
    )
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    out, err = bytearray(), bytearray()
    budget = [output_bytes]
    over = asyncio.Event()
    assert proc.stdout is not None and proc.stderr is not None
    readers = [asyncio.create_task(_drain(proc.stdout, out, budget, over)),
               asyncio.create_task(_drain(proc.stderr, err, budget, over))]
    writer: asyncio.Task[None] | None = None
    if stdin is not None and proc.stdin is not None:
        async def _feed(w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                w.write(stdin)
                await w.drain()
            with contextlib.suppress(Exception):
                w.close()
        writer = asyncio.create_task(_feed(proc.stdin))
    # Not proc.wait(): it also waits for the pipes, which a left-behind child may hold open.
    waiter = asyncio.create_task(protocol.exited.wait())
    overflow = asyncio.create_task(over.wait())
    timed_out = False
    try:
        done, _ = await asyncio.wait({waiter, overflow}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            timed_out = True
    finally:
        # Whatever happened (exit, overflow, timeout, cancellation): nothing may outlive it.
        await asyncio.to_thread(kill, proc.pid)
        overflow.cancel()
        waiter.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 5.0)
        for r in readers:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(r, 2.0)
        if writer is not None:
            writer.cancel()
    return RawOutcome(returncode=proc.returncode, stdout=bytes(out), stderr=bytes(err),
                      timed_out=timed_out, truncated=budget[0] < 0,
                      duration_s=time.monotonic() - t0, pid=proc.pid)
