"""Docker hosts of a pool: health checks and getting the sandbox image onto each host.

A pool that lists ``docker_hosts`` checks each host before it starts sandboxes there
(docs/architecture.md, "Sandboxes"): the daemon answers, and the pool's image exists on it. A
missing image is copied from a host that has it (``docker save | docker load``, streamed); a host
that fails is taken out of the pool with its reason, and its executions go to the other hosts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from engine.sandbox.docker_backend import client
from engine.sandbox.models import DockerHost

HEALTH_TIMEOUT_S = 10  # a host that does not answer a ping within this is down


def _has_image(host: DockerHost | None, image: str) -> bool:
    try:
        client(host).images.get(image)
    except Exception as e:  # docker.errors.ImageNotFound and friends
        if type(e).__name__ == "ImageNotFound":
            return False
        raise
    return True


def copy_image(image: str, source: DockerHost | None, target: DockerHost | None) -> None:
    """Stream ``image`` from ``source`` into ``target`` (``docker save | docker load``)."""
    stream: Any = client(source).api.get_image(image)
    try:
        client(target).api.load_image(stream)
    finally:
        with contextlib.suppress(Exception):
            stream.close()
    if not _has_image(target, image):
        where = target.url if target is not None else "the default daemon"
        raise RuntimeError(f"{image} is still missing on {where} after docker load")


def check_host(host: DockerHost | None, image: str, peers: Sequence[DockerHost] = ()) -> str | None:
    """None when ``host`` (None: DOCKER_HOST or the local daemon) can run the pool's sandboxes,
    else why not (one line).

    The image is loaded from the first of ``peers`` (or the default daemon) that has it.
    """
    try:
        client(host, HEALTH_TIMEOUT_S).ping()
    except Exception as e:  # noqa: BLE001
        return f"daemon not reachable: {type(e).__name__}: {str(e)[:300]}"
    try:
        if _has_image(host, image):
            return None
        sources: list[DockerHost | None] = [p for p in peers if p != host]
        if host is not None:
            sources.append(None)
        for src in sources:
            with contextlib.suppress(Exception):
                if _has_image(src, image):
                    copy_image(image, src, host)
                    return None
        return (f"image {image} is missing there and no other host has it (build it there with "
                "scripts/ci/setup_sandboxes.sh)")
    except Exception as e:  # noqa: BLE001
        return f"cannot get image {image} there: {type(e).__name__}: {str(e)[:300]}"
