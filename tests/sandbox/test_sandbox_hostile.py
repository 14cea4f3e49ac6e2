"""Hostile code against every backend: each case is contained, comes back as that execution's
failure with a reason, leaves no process behind, and the same warm sandbox keeps working.

Applicability, stated honestly (also in the test ids):
- ``local`` is a subprocess with rlimits and (as root) a dedicated unprivileged uid. It cannot
  isolate the network nor hide world-readable host files, and it can write world-writable host
  dirs such as /tmp (scrubbed at reset). Those cases run on local as ``-LIMITATION`` and assert
  that the limitation is real, so that nobody mistakes local for an isolation boundary. DNS on
  local depends on the host resolver and is skipped there.
- Cases that rely on the uid drop (root-only files, other processes, RLIMIT_NPROC) need the engine
  to run as root for ``local``; they are skipped on local otherwise.
- ``bwrap`` and ``docker`` must contain every case.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sandbox_testlib import SECRET, backend_skip_reason, is_root

from engine.sandbox import ExecResult, SandboxLimits, SandboxPoolConfig, SandboxRouter, _proc
from engine.sandbox.base import Sandbox

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(wall_time_s=2.0, cpu_s=1, memory_mb=384, output_bytes=256 * 1024,
                       file_size_mb=16, open_files=128, max_procs=64)


@dataclass
class Ctx:
    port: int
    listener: Listener
    host_ip: str
    marker: str
    secret_file: Path
    engine_pid: int = field(default_factory=os.getpid)

    def fmt(self, code: str) -> str:
        return code.format(port=self.port, host_ip=self.host_ip, marker=self.marker,
                           secret_file=self.secret_file, engine_pid=self.engine_pid, repo=REPO)


@dataclass(frozen=True)
class Case:
    id: str
    code: str
    expect: tuple[str, ...] = ("fail",)  # any of: fail, ok, timeout, output_limit, cpu_limit, signal
    check: Callable[[Ctx, ExecResult], None] | None = None
    limitation_local: Callable[[Ctx, ExecResult], None] | None = None
    skip_local: str | None = None
    local_needs_root: bool = False
    shell: bool = False


def _no_connection(ctx: Ctx, r: ExecResult) -> None:
    assert not ctx.listener.received(), "the listener was reached"
    assert "connected" not in r.stdout


def _connected(ctx: Ctx, r: ExecResult) -> None:
    assert r.ok and "connected" in r.stdout, r
    assert b"pwned" in ctx.listener.received(), "the listener did not record the connection"


def _no_secret(ctx: Ctx, r: ExecResult) -> None:
    assert SECRET not in r.stdout + r.stderr


def _host_untouched(ctx: Ctx, r: ExecResult) -> None:
    for p in ("/etc/evalbench_pwned", "/usr/evalbench_pwned", "/root/evalbench_pwned",
              str(REPO / "evalbench_pwned"), f"/tmp/{ctx.marker}"):
        assert not os.path.exists(p), p


def _tmp_written(ctx: Ctx, r: ExecResult) -> None:
    assert r.ok and os.path.exists(f"/tmp/{ctx.marker}")


def _read_ok(ctx: Ctx, r: ExecResult) -> None:
    assert r.ok and "[project]" in r.stdout


def _truncated(ctx: Ctx, r: ExecResult) -> None:
    assert r.truncated and len(r.stdout) + len(r.stderr) <= LIMITS.output_bytes


CONNECT = ("import socket\ns = socket.create_connection(({host!r}, {{port}}), timeout=1)\n"
           "s.sendall(b'pwned'); print('connected')")

CASES = [
    Case("net_loopback_tcp", CONNECT.format(host="127.0.0.1"), check=_no_connection,
         limitation_local=_connected),
    Case("net_host_ip_tcp", CONNECT.format(host="{host_ip}"), check=_no_connection,
         limitation_local=_connected),
    Case("net_docker_bridge_tcp", CONNECT.format(host="172.17.0.1"), check=_no_connection,
         limitation_local=None, skip_local="local cannot block the network (host-dependent)"),
    Case("net_dns", "import socket; print(socket.getaddrinfo('pypi.org', 443))",
         skip_local="local cannot block DNS; the result depends on the host resolver"),
    Case("read_etc_shadow", "print(open('/etc/shadow').read())", local_needs_root=True),
    Case("read_root_only_host_file", "print(open('{secret_file}').read())",
         check=_no_secret, local_needs_root=True),
    Case("read_world_readable_host_file", "print(open('{repo}/pyproject.toml').read())",
         limitation_local=_read_ok),
    Case("env_secret", "import os; print(os.environ['EVALBENCH_TEST_SECRET'])", check=_no_secret),
    Case("proc_environ_scan",
         "import os, sys\nfor p in os.listdir('/proc'):\n"
         "    try: d = open(f'/proc/{{p}}/environ', 'rb').read()\n"
         "    except OSError: continue\n"
         "    if b'EVALBENCH_TEST_SECRET' in d: print(d); sys.exit(0)\n"
         "sys.exit('secret not found')", check=_no_secret, local_needs_root=True),
    Case("write_outside_workdir",
         "ok = []\nfor p in ['/etc/evalbench_pwned', '/usr/evalbench_pwned', "
         "'/root/evalbench_pwned', '{repo}/evalbench_pwned']:\n"
         "    try: open(p, 'w').write('x'); ok.append(p)\n    except OSError: pass\n"
         "if not ok: raise PermissionError('every write outside the work dir was refused')\n"
         "print(ok)", check=_host_untouched, local_needs_root=True),
    Case("write_host_tmp", "open('/tmp/{marker}', 'w').write('x'); print('wrote')",
         expect=("ok",), check=_host_untouched, limitation_local=_tmp_written),
    Case("fork_bomb_python",
         "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
         expect=("timeout", "cpu_limit", "signal"), local_needs_root=True),
    Case("fork_bomb_shell", "f() {{ f | f & }}; f; sleep 5", shell=True,
         expect=("timeout", "fail", "signal"), local_needs_root=True),
    Case("thread_bomb", "import threading, time\n"
         "for _ in range(100000): threading.Thread(target=time.sleep, args=(30,)).start()",
         expect=("fail", "timeout"), local_needs_root=True),
    Case("memory_bomb_bulk", "x = bytearray(8 * 1024 ** 3)", expect=("fail", "signal")),
    Case("memory_bomb_gradual", "xs = []\nwhile True: xs.append(bytearray(32 * 2 ** 20))",
         expect=("fail", "signal")),
    Case("infinite_loop", "while True: pass", expect=("cpu_limit", "timeout")),
    Case("cpu_spin_threads", "import threading\ndef spin():\n    while True: pass\n"
         "for _ in range(4): threading.Thread(target=spin).start()",
         expect=("cpu_limit", "timeout")),
    Case("sleep_forever", "import time; time.sleep(3600)", expect=("timeout",)),
    Case("huge_stdout", "import sys\nwhile True: sys.stdout.buffer.write(b'x' * 65536)",
         expect=("output_limit",), check=_truncated),
    Case("huge_stderr", "import sys\nwhile True: sys.stderr.buffer.write(b'e' * 65536)",
         expect=("output_limit",), check=_truncated),
    Case("huge_file", "f = open('big', 'wb')\nfor _ in range(200): f.write(b'0' * 2 ** 20)"),
    Case("too_many_open_files", "fs = [open('f%d' % i, 'w') for i in range(100000)]"),
    Case("orphan_daemon_exit0",
         "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
         "        time.sleep(1000)\n    os._exit(0)\nprint('parent done')",
         expect=("ok",), local_needs_root=True),
    Case("children_block_parent",
         "import subprocess\nps = [subprocess.Popen(['sleep', '1000']) for _ in range(3)]\n"
         "[p.wait() for p in ps]", expect=("timeout",)),
    Case("kill_parent", "import os, time; os.kill(os.getppid(), 9); time.sleep(30)",
         expect=("fail", "timeout", "signal"), local_needs_root=True),
    Case("signal_engine_pid", "import os, signal; os.kill({engine_pid}, signal.SIGTERM)",
         local_needs_root=True),
    Case("kill_everything", "import os, sys, signal; os.kill(-1, signal.SIGKILL); "
         "sys.exit('still alive')", expect=("fail", "signal")),
    Case("ignore_signals_sleep", "import signal, time\n"
         "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\n"
         "time.sleep(3600)", expect=("timeout",)),
    Case("sigstop_self", "import os, signal; os.kill(os.getpid(), signal.SIGSTOP)",
         expect=("timeout",)),
    Case("segfault", "import ctypes; ctypes.string_at(0)", expect=("signal",)),
    Case("setuid_root", "import os; os.setuid(0)"),
    Case("lock_workdir_chmod_000",
         "import os\nos.makedirs('a/b'); open('a/b/f', 'w').write('x')\n"
         "os.chmod('a/b', 0); os.chmod('a', 0); os.chmod('.', 0o500)\nprint('locked')",
         expect=("ok",)),
]


def _outcome(r: ExecResult) -> str:
    if r.ok:
        return "ok"
    if r.killed_reason in ("timeout", "output_limit", "cpu_limit", "signal"):
        return r.killed_reason
    return "fail"


def leftovers(sb: Sandbox) -> list[str]:
    """Processes of the sandbox still alive, zombies awaiting their reaper aside (host view)."""
    if sb.backend in ("local", "bwrap"):
        uid = getattr(sb, "uid", None)
        return [str(p) for p in _proc.live_pids(uid=uid)] if uid is not None else []
    from engine.sandbox.docker_backend import client

    top = client().api.top(sb.container_id, ps_args="-o pid,stat,args")  # type: ignore[attr-defined]
    stat, cmd = top["Titles"].index("STAT"), top["Titles"].index("COMMAND")
    return [" ".join(p) for p in top["Processes"] if "Z" not in p[stat]
            and "docker-init" not in p[cmd] and p[cmd] != "sleep infinity"]


class Listener:
    """A TCP listener on every interface that records what each connection sends.

    Connections are recorded by a background thread, so a connection the sandboxed code made may
    not be recorded yet when its execution returns. `received()` is the barrier: it connects
    itself and waits until the listener has recorded that connection; the kernel hands out
    established connections in order, so every earlier connection is recorded by then.
    """

    SENTINEL = b"<evalbench-barrier>"

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("0.0.0.0", 0))
        self.srv.listen(16)
        self.port = int(self.srv.getsockname()[1])
        self._accepted: list[bytes] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            conn.settimeout(1)
            try:
                data = conn.recv(100) or b"<connected>"
            except OSError:
                data = b"<connected>"
            conn.close()
            with self._changed:
                self._accepted.append(data)
                self._changed.notify_all()

    def received(self, timeout: float = 30.0) -> list[bytes]:
        """Everything received so far, after every earlier connection has been recorded."""
        with self._changed:
            seen = self._accepted.count(self.SENTINEL)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(self.SENTINEL)
        with self._changed:
            done = self._changed.wait_for(lambda: self._accepted.count(self.SENTINEL) > seen, timeout=timeout)
            assert done, f"the test listener did not record its own connection within {timeout} s"
            return [d for d in self._accepted if d != self.SENTINEL]

    def reset(self) -> None:
        self.received()  # wait for stragglers of the previous case first
        with self._changed:
            self._accepted.clear()

    def close(self) -> None:
        self.srv.close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def _host_ip() -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
        return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


@pytest.fixture(scope="module")
def routers(run: Any) -> Iterator[dict[str, SandboxRouter]]:
    made: dict[str, SandboxRouter] = {}
    yield made
    for r in made.values():
        run(r.__aexit__(None, None, None))


def _params() -> list[Any]:
    out = []
    for case in CASES:
        for backend in ("local", "bwrap", "docker"):
            suffix = "-LIMITATION" if backend == "local" and case.limitation_local else ""
            out.append(pytest.param(case, backend, id=f"{case.id}-{backend}{suffix}"))
    return out


@pytest.mark.parametrize(("case", "backend"), _params())
def test_hostile(case: Case, backend: str, run: Any, routers: dict[str, SandboxRouter],
                 listener: Listener, tmp_path: Path) -> None:
    reason = backend_skip_reason(backend)
    if reason:
        pytest.skip(reason)
    if backend == "local" and case.skip_local:
        pytest.skip(case.skip_local)
    if backend == "local" and case.local_needs_root and not is_root():
        pytest.skip("local contains this only when the engine runs as root (dedicated uid)")
    listener.reset()
    secret_dir = tmp_path / "root-only"
    secret_dir.mkdir(mode=0o700)
    secret_file = secret_dir / "secret.txt"
    secret_file.write_text(SECRET)
    os.chmod(tmp_path, 0o700)
    ctx = Ctx(port=listener.port, listener=listener, host_ip=_host_ip(), secret_file=secret_file,
              marker=f"evalbench-escape-{os.getpid()}-{case.id}-{backend}")
    if backend not in routers:
        pool = SandboxPoolConfig(name=f"hostile-{backend}", backend=backend,  # type: ignore[arg-type]
                                 instances=1, limits=LIMITS)
        routers[backend] = run(SandboxRouter([pool]).__aenter__())
    router = routers[backend]
    code = ctx.fmt(case.code)
    command = ["bash", "-c", code] if case.shell else ["python3", "-c", code]

    async def go() -> tuple[ExecResult, list[str], ExecResult]:
        async with router.session(["python"]) as sb:
            r = await sb.exec(command)
            left = leftovers(sb)
            # SIGKILL delivery is asynchronous: a killed process may stay listed for a moment.
            deadline = time.monotonic() + 15  # generous: the machine may be busy
            while left and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                left = leftovers(sb)
            if backend == "local" and case.limitation_local:
                case.limitation_local(ctx, r)
            after = await sb.exec(["python3", "-c", "print('still works')"])
            return r, left, after
    try:
        r, left, after = run(go())
        assert not left, f"processes survived the execution: {left}"
        assert after.ok and after.stdout == "still works\n", after
        if backend == "local" and case.limitation_local:
            return  # asserted above: the documented limitation is real
        assert _outcome(r) in case.expect, (r.reason, r)
        if _outcome(r) != "ok":
            assert r.reason, r
        if case.check:
            case.check(ctx, r)
    finally:
        # missing_ok: once released, the sandbox's uid scrubs its files from /tmp (its own reset, or
        # another xdist worker's local sandbox that takes the uid next) at any moment
        Path(f"/tmp/{ctx.marker}").unlink(missing_ok=True)
    # The sandbox was reset after the session: a fresh, empty work dir, nothing running.
    fresh = run(router.exec(["python"], ["sh", "-c", "ls -A | wc -l"]))
    assert fresh.ok and fresh.stdout.strip() == "0", fresh
    if backend == "local":
        assert not os.path.exists(f"/tmp/{ctx.marker}")
