"""The built wheel works on its own: configs and shipped data come from inside the package.

The wheel is built from a copy of the sources (no build folder in the checkout) and installed with
`--no-deps` into a fresh venv. Offline, the dependencies cannot be downloaded, so the venv borrows
them from the development venv: a `.pth` file in the fresh venv's site-packages names the dev venv's
site-packages. Python only appends that folder to sys.path (it does not process the `.pth` files
inside it, so the dev venv's editable install of evalbench stays inert): `engine` is imported from
the wheel, everything else from the dev venv. Commands run from an empty folder, with no PYTHONPATH.

`test_bring_your_own_evals` builds README "Bring your own evals" (a user repository made of the files
that section shows, outside the engine's tree) and lists it through the installed wheel; the README
test (tests/test_readme.py) runs that section's commands and checks their records.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "engine", "hydra_plugins", "conf", "data")


@pytest.fixture(scope="session")
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
    static = Path(engine_file).parent / "compare" / "static"  # the comparison viewer's files
    assert {p.name for p in static.iterdir()} >= {"viewer.html", "viewer.js", "viewer.css", "plots.js"}


def test_the_test_tools_are_no_runtime_dependencies(installed, tmp_path):
    """pytest and playwright come with the `test` extra (scripts/install.sh installs it), not with evalbench."""
    res = run(installed, ["-c", "from importlib.metadata import requires; print('\\n'.join(requires('evalbench')))"],
              tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]

    def names(lines: list[str]) -> set[str]:  # "pytest>=8; extra == 'test'" -> "pytest"
        return {re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0].lower() for line in lines}

    lines = res.stdout.splitlines()
    runtime = names([line for line in lines if "extra ==" not in line])
    test_extra = names([line for line in lines if 'extra == "test"' in line])
    assert "torch" in runtime and "hydra-core" in runtime  # the parse sees the runtime dependencies
    assert not runtime & {"pytest", "playwright", "pytest-xdist", "pytest-timeout", "statsmodels"}, sorted(runtime)
    assert {"pytest", "playwright"} <= test_extra, sorted(test_extra)


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


def readme_example_files() -> dict[str, str]:
    """path → text of every file README "Bring your own evals" shows (a code block after `<!-- file: PATH -->`)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Bring your own evals"):]
    section = section[:section.index("\n## ", 1)]
    return {m[1]: m[2] for m in re.finditer(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", section, re.S)}


@pytest.mark.slow
def test_bring_your_own_evals(installed, tmp_path):
    repo = tmp_path / "my-repo"
    files = readme_example_files()
    assert {"evalbench.yaml", "my_evals/plugin.py", "my_evals/variant/capitals/3shot.yaml"} <= set(files)
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    # from a folder below the repository: evalbench.yaml is found upward, its `imports:` load
    listed = run(installed, ["-m", "engine.list", "variant"], repo / "my_evals" / "task", **offline)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = {ln.split()[0]: ln for ln in listed.stdout.splitlines()[1:]}
    assert "my_evals" in rows["capitals:3shot"] and "my_evals.plugin:register_variant" in rows["capitals_shouted:brief"]
    assert rows["3shot"].split()[1] == "builtin"

    # our @task class and the Python-registered variant, composed and built from the wheel (no model call)
    shown = run(installed, ["-m", "engine", "task=capitals_shouted:brief", "inspect=true", "limit=2"], repo, **offline)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.count("WHAT IS THE CAPITAL OF") >= 2 and "capitals_shouted:brief" in shown.stdout

