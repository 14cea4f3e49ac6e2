"""Whether a pool can run anything at all: its backend works on at least one of its hosts.

Asked twice (docs/architecture.md, "Sandboxes"): before a run, so that a run whose sandboxes
cannot start stops with exit 2 before any model call (``preflight.py``); and when an execution
failed with ``SandboxError`` and its retry too, to tell a lost host (``sandbox_unavailable``: the
execution did not run) from one sandbox breaking down (``sandbox``).
"""

from __future__ import annotations

import asyncio
import os

from engine.sandbox.bwrap import BwrapSandbox, bwrap_path
from engine.sandbox.docker_hosts import check_host
from engine.sandbox.models import DockerHost, SandboxPoolConfig


def docker_host_label(host: DockerHost | None) -> str:
    """The daemon's URL; for the default one, where it came from."""
    if host is not None:
        return f"docker host {host.url}"
    if url := os.environ.get("DOCKER_HOST"):
        return f"docker host {url} (DOCKER_HOST)"
    return "docker host unix:///var/run/docker.sock (the default)"


async def _bwrap_reason(config: SandboxPoolConfig) -> str | None:
    """Start one real bwrap sandbox and run ``true`` in it (user namespaces may be off)."""
    if bwrap_path() is None:
        return "bubblewrap (bwrap) is not installed"
    sb = BwrapSandbox(config, index=-1)  # "<pool>#-1": not one of the pool's own sandboxes
    try:
        await sb.start()
        res = await sb.exec(["true"], timeout_s=30)
    except Exception as e:  # noqa: BLE001 - any failure to start is the answer
        return f"bwrap cannot start a sandbox: {type(e).__name__}: {str(e)[:300]}"
    finally:
        await sb.stop()
    if not res.ok:
        return f"bwrap cannot run a command: {res.reason}"
    return None


async def docker_host_reason(config: SandboxPoolConfig, host: DockerHost | None) -> str | None:
    """None when ``host`` answers and has (or was given) the pool's image, else why not."""
    peers = tuple(config.docker_hosts)
    return await asyncio.to_thread(check_host, host, config.effective_image or "", peers)


async def pool_unavailable_reason(config: SandboxPoolConfig, host: DockerHost | None = None
                                  ) -> str | None:
    """None when the pool (or its one ``host``) can start a sandbox, else the cause (one line).

    A docker pool over several hosts is usable when one of them is.
    """
    if config.backend == "local":
        return None
    if config.backend == "bwrap":
        return await _bwrap_reason(config)
    hosts: list[DockerHost | None] = [host] if host is not None else list(config.docker_hosts) or [None]
    reasons = await asyncio.gather(*(docker_host_reason(config, h) for h in hosts))
    if any(r is None for r in reasons):
        return None
    return "; ".join(f"{docker_host_label(h)}: {r}" for h, r in zip(hosts, reasons, strict=True))
