"""Safe file access inside a sandbox work dir from the host side.

The engine runs as root while the work dir belongs to sandboxed code: every path is walked with
``O_NOFOLLOW`` directory file descriptors, so a symlink planted by the code (``out.txt ->
/etc/shadow``) is never followed when the engine writes input files or reads results.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile


def _split_rel(path: str) -> list[str]:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or path.startswith("/") or ".." in parts:
        raise ValueError(f"sandbox path must be relative inside the work dir: {path!r}")
    return parts


def _open_parent(root: str, parts: list[str], *, create: bool, owner: int | None) -> int:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    if owner is not None:
                        os.chown(part, owner, owner, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def safe_write(root: str, rel: str, data: str | bytes, *, owner: int | None) -> None:
    parts = _split_rel(rel)
    payload = data.encode() if isinstance(data, str) else data
    dfd = _open_parent(root, parts, create=True, owner=owner)
    try:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(parts[-1], dir_fd=dfd)
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=dfd)
        try:
            if owner is not None:
                os.fchown(fd, owner, owner)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def safe_read(root: str, rel: str, *, max_bytes: int) -> bytes:
    parts = _split_rel(rel)
    dfd = _open_parent(root, parts, create=False, owner=None)
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PermissionError(f"{rel!r} is a symlink; refusing to follow it") from e
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermissionError(f"{rel!r} is not a regular file")
            chunks: list[bytes] = []
            total = 0
            while total <= max_bytes:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > max_bytes:
                raise ValueError(f"{rel!r} is larger than {max_bytes} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def make_workdir(prefix: str, owner: int | None) -> tuple[str, str]:
    """(outer dir, work dir): outer is root-owned 0711, work dir belongs to the sandbox uid."""
    outer = tempfile.mkdtemp(prefix=prefix)
    os.chmod(outer, 0o711)
    work = os.path.join(outer, "work")
    os.mkdir(work, 0o700)
    if owner is not None:
        os.chown(work, owner, owner)
    return outer, work
