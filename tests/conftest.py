"""Shared fixtures. Tests run offline; each gets its own MLflow store, cache and run folder."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine.config.paths import evalbench_home
from engine.models.embedded import embedded_checkpoint_dir
from tests.durations import order_longest_modules_first
from tests.durations import register as register_durations

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serial: must not run beside other tests that start sandboxes (uid leases and the reaping of "
        "orphaned sandbox uids are machine-wide); run these in a separate pass without -n")
    register_durations(config)
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        _private_evalbench_home(worker)
        # One torch thread per worker (and its `python -m engine` children): two workers with two
        # OpenMP threads each on 2 cores spin against each other; measured 5 s vs 32-70 s for 64 tokens.
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order_longest_modules_first(items)


def _private_evalbench_home(worker: str) -> None:
    """Under pytest-xdist each worker gets its own EVALBENCH_HOME (inherited by `python -m engine`
    subprocesses) whose models/ links to the shared one: the converted SmolLM2 is shared (its
    conversion holds a lock), while the content-hash memo file, rewritten without a lock, is not."""
    shared = evalbench_home()
    (shared / "models").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.gettempdir()) / f"evalbench-home-{os.getuid()}-{os.getppid()}-{worker}"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(shared / "models", target_is_directory=True)
    os.environ["EVALBENCH_HOME"] = str(home)


def run_engine(args: list[str], cwd: Path, timeout: float = 900, env: dict[str, str] | None = None):
    """`python -m engine ARGS` in a subprocess, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh directory with its own cache, MLflow store and run folders."""
    return tmp_path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return embedded_checkpoint_dir()


@pytest.fixture(scope="session")
def smollm2_provider(smollm2_dir: Path):
    """One in-process HF provider on the embedded SmolLM2 for the whole session: the weights load
    once (lazily, on first use) instead of once per module. Stateless between calls; do not mutate."""
    from engine.config.schema import ModelConfig
    from engine.models.hf import HFProvider  # torch/transformers are heavy: only slow tests need them

    return HFProvider(ModelConfig(name="smollm2-135m-instruct", path=str(smollm2_dir)))
