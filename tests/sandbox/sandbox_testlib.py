"""Helpers for the sandbox tests: backend availability, the secret, one event loop per module."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

# engine.scoring's package __init__ imports engine.tasks, which imports engine.scoring.scorers:
# importing engine.scoring first currently hits that cycle, importing engine.tasks first does not.
try:
    import engine.tasks  # noqa: F401
except Exception:  # noqa: BLE001 - the sandbox tests do not need it otherwise
    pass

# Set before any sandbox starts: no sandboxed code may ever see it.
SECRET = "evalbench-test-secret-0b5c7e"
os.environ["EVALBENCH_TEST_SECRET"] = SECRET

ALL_BACKENDS = ("local", "bwrap", "docker")


def backend_skip_reason(backend: str) -> str | None:
    if backend == "bwrap" and shutil.which("bwrap") is None:
        return "bubblewrap not installed (run scripts/ci/setup_sandboxes.sh)"
    if backend == "docker":
        from engine.sandbox.docker_backend import docker_unavailable_reason

        reason = docker_unavailable_reason()
        if reason is not None:
            return f"{reason} (run scripts/ci/setup_sandboxes.sh)"
        from engine.sandbox.docker_backend import client
        from engine.sandbox.models import DEFAULT_DOCKER_IMAGE

        try:
            client().images.get(DEFAULT_DOCKER_IMAGE)
        except Exception:  # noqa: BLE001
            return f"image {DEFAULT_DOCKER_IMAGE} missing (run scripts/ci/setup_sandboxes.sh)"
    return None


def backend_params(backends: tuple[str, ...] = ALL_BACKENDS) -> list[Any]:
    return [pytest.param(b, id=b) for b in backends]


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    reason = backend_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return str(request.param)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop per module so routers and warm sandboxes live across tests."""
    lp = asyncio.new_event_loop()
    yield lp
    lp.run_until_complete(lp.shutdown_asyncgens())
    lp.close()


@pytest.fixture(scope="module")
def run(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[T]], T]:
    def _run(aw: Awaitable[T]) -> T:
        return loop.run_until_complete(aw)

    return _run  # type: ignore[return-value]


def is_root() -> bool:
    return os.geteuid() == 0
