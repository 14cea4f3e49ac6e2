"""The built wheel works on its own: configs and shipped data come from inside the package.

The wheel is built from a copy of the sources (no build folder in the checkout) and installed with
`--no-deps` into a fresh venv. Offline, the dependencies cannot be downloaded, so the venv borrows
them from the development venv: a `.pth` file in the fresh venv's site-packages names the dev venv's
site-packages. Python only appends that folder to sys.path (it does not process the `.pth` files
inside it, so the dev venv's editable install of evalbench stays inert): `engine` is imported from
the wheel, everything else from the dev venv. Commands run from an empty folder, with no PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "engine", "hydra_plugins", "conf", "data")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv holding only the evalbench wheel (plus the dev venv's dependencies)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "_shipped"))
        else:
            shutil.copy2(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "-w", str(tmp / "dist"), "--no-deps",
                            "--no-build-isolation", "-q"], capture_output=True, text=True, timeout=300, cwd=tmp)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("evalbench-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "evalbench_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def run(python: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EVALBENCH_CONF", "EVALBENCH_CONFIG_PATH")}
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**clean, **env})


def test_the_wheel_holds_the_configs_and_the_shipped_data(installed, tmp_path):
    res = run(installed, ["-c", "import engine, hydra_plugins.evalbench_searchpath as p; from engine.config.paths "
                          "import conf_dir, project_root; print(engine.__file__); print(conf_dir()); "
                          "print(project_root()); print(p.__file__)"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    engine_file, conf, root, plugin = res.stdout.split()
    venv = installed.parents[1]
    assert Path(engine_file).is_relative_to(venv) and Path(plugin).is_relative_to(venv)
    assert Path(conf) == Path(root) / "conf" and Path(root).name == "_shipped"
    assert (Path(conf) / "config.yaml").is_file() and (Path(conf) / "task" / "freshqa.yaml").is_file()
    assert (Path(root) / "data" / "corpus" / "jupiter.md").is_file()


def test_a_shipped_task_runs_from_an_empty_folder(installed, tmp_path):
    res = run(installed, ["-m", "engine", "task=freshqa:zero", "limit=1", "inspect=true", "tracking=none"], tmp_path,
              HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("=== freshqa:zero ") and "--- instance fq-" in res.stdout
    assert "Answer with a short phrase." in res.stdout


def test_a_shipped_data_path_never_reads_the_working_directory(installed, tmp_path):
    """A `data/freshqa/freshqa.jsonl` in the working directory is not the shipped task's data."""
    (tmp_path / "data" / "freshqa").mkdir(parents=True)
    (tmp_path / "data" / "freshqa" / "freshqa.jsonl").write_text(
        '{"id": "decoy", "question": "Decoy question?", "answer": "decoy"}\n')
    res = run(installed, ["-m", "engine", "task=freshqa", "limit=1", "inspect=true", "tracking=none"], tmp_path,
              HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "--- instance fq-" in res.stdout and "decoy" not in res.stdout.lower()


def test_listing_from_an_installed_package(installed, tmp_path):
    res = run(installed, ["-m", "engine.list"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "task (" in res.stdout and "suite (" in res.stdout
    line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith("freshqa "))
    assert "builtin" in line
