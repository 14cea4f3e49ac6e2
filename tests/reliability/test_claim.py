"""Two live runs never write into one output folder (engine/record/claim.py): the second writes
beside the first and says so; a finished or killed run leaves the folder free for the next."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.record.claim import CLAIM_FILE, claim_output_dir
from tests.conftest import run_engine

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from engine.record.claim import claim_output_dir
    print(claim_output_dir(Path(sys.argv[1])), flush=True)
    time.sleep(120)
""")


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that claims `folder` and keeps it (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert Path(proc.stdout.readline().strip()) == folder.absolute()  # it holds the folder now
    return proc


def test_a_folder_held_by_a_live_process_is_left_to_it_and_freed_when_it_dies(tmp_path):
    folder = tmp_path / "runs" / "same"
    proc = _holder(folder)
    try:
        got = claim_output_dir(folder)
        assert got == folder.with_name("same-2")
        assert (folder / CLAIM_FILE).read_text().strip() == str(proc.pid)  # who holds it, for the message
        assert claim_output_dir(folder) == got and claim_output_dir(got) == got  # one claim per process
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # SIGKILL released the lock: the next run (a resume, a re-run) takes the folder again
    second = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", ""), str(folder)],
                            capture_output=True, text=True, timeout=60)
    assert Path(second.stdout.strip()) == folder.absolute(), second.stderr


@pytest.mark.slow
def test_a_run_started_into_a_busy_folder_keeps_its_own_records(workdir):
    folder = workdir / "runs" / "same"
    proc = _holder(folder)
    try:
        res = run_engine(["task=mmlu:mc", "limit=2", "seed=7", "tracking=none", f"hydra.run.dir={folder}",
                          f"cache.path={workdir / 'cache.sqlite'}"], workdir, timeout=600)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert res.returncode == 0, res.stderr[-3000:]
    moved = folder.with_name("same-2")
    assert f"is being written by another evalbench run (pid {proc.pid}); this run's records go to {moved}" in res.stderr
    record = json.loads((moved / "mmlu__mc" / "experiment.json").read_text())
    assert record["seeds"]["seed"] == 7 and record["run_dir"] == str(moved / "mmlu__mc")
    assert f"run folder {moved / 'mmlu__mc'}" in res.stdout
    assert not (folder / "mmlu__mc").exists()  # nothing written into the other run's folder


def test_a_file_system_without_locks_leaves_the_folder_unclaimed_not_the_run_failed(tmp_path, monkeypatch):
    import errno

    from engine.record import claim

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(claim.fcntl, "flock", no_locks)
    folder = tmp_path / "nfs" / "run"
    assert claim_output_dir(folder) == folder.absolute()
