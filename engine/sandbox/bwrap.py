"""``bwrap`` backend: the local backend inside bubblewrap.

The sandbox sees a minimal filesystem: ``/usr`` (and the merged-usr ``/bin``, ``/lib*`` links)
read-only, a synthetic ``/etc`` (passwd, group, hosts, alternatives), fresh ``/proc`` and
``/dev``, a private size-limited ``/tmp`` and its work dir at ``/work``. All namespaces are
unshared (no network unless the pool grants ``network``; a private pid namespace, so every
process dies with the sandbox's init), the environment is cleared, it dies with its parent, and
it runs as uid 65534 inside a user namespace created by an unprivileged host uid (the dedicated
sandbox uid when the engine is root), so even a bound root-only file would stay unreadable.
Python inside is the system ``/usr/bin/python3`` (a venv under /root is not visible).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from typing import ClassVar

from engine.sandbox.base import SANDBOX_PATH, SandboxError
from engine.sandbox.local import HostProcessSandbox

_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PASSWD = ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
           "sandbox:x:65534:65534:sandbox:/work:/bin/sh\n")
_GROUP = "root:x:0:\nsandbox:x:65534:\n"
_HOSTS = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _sweep_stale_etc_dirs() -> None:
    """Remove the /etc dirs of engine processes that died without running atexit."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        parts = name.split("-")
        if not name.startswith("evalbench-bwrap-etc-") or len(parts) < 5 or not parts[3].isdigit():
            continue
        try:
            os.kill(int(parts[3]), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        except PermissionError:
            pass


@functools.lru_cache(maxsize=1)
def _etc_dir() -> str:
    """A synthetic read-only /etc shared by all bwrap sandboxes of this process."""
    _sweep_stale_etc_dirs()
    d = tempfile.mkdtemp(prefix=f"evalbench-bwrap-etc-{os.getpid()}-")
    atexit.register(shutil.rmtree, d, True)
    for name, text in (("passwd", _PASSWD), ("group", _GROUP), ("hosts", _HOSTS),
                       ("hostname", "sandbox\n"), ("nsswitch.conf", "passwd: files\n"
                                                   "group: files\nhosts: files dns\n")):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    # Mount points for host files bound on top (a read-only /etc cannot grow them later).
    os.mkdir(os.path.join(d, "alternatives"))
    for name in ("ld.so.cache", "localtime", "resolv.conf"):
        open(os.path.join(d, name), "w").close()
    os.chmod(d, 0o755)
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o755 if name == "alternatives" else 0o644)
    return d


@functools.lru_cache(maxsize=1)
def _root_args() -> tuple[str, ...]:
    args: list[str] = ["--ro-bind", "/usr", "/usr"]
    for name in _ROOT_LINKS:
        p = "/" + name
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            args += ["--ro-bind", p, p]
    args += ["--ro-bind", _etc_dir(), "/etc"]
    for extra in ("/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(extra):
            args += ["--ro-bind", extra, extra]
    return tuple(args)


class BwrapSandbox(HostProcessSandbox):
    backend: ClassVar[str] = "bwrap"

    async def start(self) -> None:
        if bwrap_path() is None:
            raise SandboxError("bubblewrap (bwrap) is not installed; run scripts/ci/setup_sandboxes.sh")
        await super().start()

    def _env(self) -> dict[str, str]:
        # bwrap itself runs with an empty environment too; the child's is set with --setenv.
        return {"PATH": SANDBOX_PATH}

    def _wrap(self, argv: list[str]) -> list[str]:
        lim = self.limits
        args = [bwrap_path() or "bwrap", "--unshare-all", "--unshare-user", "--disable-userns",
                "--die-with-parent", "--new-session", "--clearenv",
                "--uid", "65534", "--gid", "65534", "--hostname", "sandbox",
                *_root_args(),
                "--proc", "/proc", "--dev", "/dev",
                "--size", str(64 * 1024 * 1024), "--tmpfs", "/tmp",
                "--bind", self.workdir, "/work", "--chdir", "/work",
                "--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", "/work",
                "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8",
                "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "PYTHONUNBUFFERED", "1"]
        if lim.network:
            args += ["--share-net"]
            if os.path.exists("/etc/resolv.conf"):
                args += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
        return [*args, "--", *argv]
