"""A joblib job whose process is killed (SIGKILL: what the out-of-memory killer sends) is its own
failure: the sibling job finishes, the killed one is reported failed with its cause in one line, no
loky traceback is printed, and the sweep exits 1 (engine/sweep.py `run_isolated`; docs/architecture.md,
"Sweeps on launchers"). Before, loky broke its whole pool: the sibling was `missing` too.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from engine.record.sweep import read_job_results
from tests.conftest import run_engine

# Imported by every job (`imports=[killer]`): job 1's process dies as an out-of-memory kill would, at
# once and deterministically; job 0 runs on. The parent imports the module too, when it validates
# every job before the launch: there no job runs (no HydraConfig), so nothing dies.
KILLER = """import os, signal
from hydra.core.hydra_config import HydraConfig
if HydraConfig.initialized() and HydraConfig.get().job.num == 1:
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _joblib_installed() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None
    except ImportError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _joblib_installed(), reason="hydra-joblib-launcher is not installed (pip install -e '.[scale]')")
def test_a_killed_job_is_its_own_failure(workdir: Path) -> None:
    (workdir / "killer.py").write_text(KILLER)
    sweep = workdir / "sweep"
    path = os.pathsep.join(p for p in (str(workdir), os.environ.get("PYTHONPATH", "")) if p)
    res = run_engine(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "task=mmlu", "limit=2", "tracking=none",
                      "imports=[killer]", "seed=1,2", f"hydra.sweep.dir={sweep}"], workdir, timeout=900, env={"PYTHONPATH": path})
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    healthy, killed = read_job_results(sweep)
    assert healthy.status == "finished" and [(r.status, r.scored) for r in healthy.runs] == [("finished", 2)], out[-3000:]
    assert killed.status == "failed" and killed.exit_code == 1 and "killed by SIGKILL" in (killed.reason or "")
    assert "2 job(s): 1 finished, 1 failed" in res.stdout
    assert "Traceback" not in out, out[-3000:]  # loky's TerminatedWorkerError with its traceback, before
    assert "TerminatedWorkerError" not in out
