"""Build hook: the wheel ships the repository's top-level `conf/` and `data/` (built-in configs, the
search corpus, FreshQA's rows) inside the package as `engine/_shipped/`, where
`engine.config.paths.project_root()` finds them (docs/architecture.md, "Paths"). Metadata is in
pyproject.toml; an editable install reads the checkout itself and copies nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("conf", "data")  # top-level folders of the repository, copied whole


class BuildPyWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            target = Path(self.build_lib) / "engine" / "_shipped" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildPyWithShippedFiles})
