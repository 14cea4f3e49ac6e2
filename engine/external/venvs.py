"""`python -m engine.external.venvs lm_eval`: create a benchmark's own venv under `EVALBENCH_VENVS`
or the evalbench home (~/.cache/evalbench/venvs/<name>), so that its pins never touch the engine's
environment.

Packages come from the configured package index (pip's own configuration: an offline mirror
works); torch is pinned to the version whose CPU wheel lies on local disk.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

from engine.external import lm_eval

# Where each is created (the first place the wrapper looks) and what it installs.
VENVS: dict[str, tuple[Callable[[], Path], tuple[str, ...]]] = {
    "lm_eval": (lambda: lm_eval.venv_dirs()[0], lm_eval.REQUIREMENTS)}


def create(name: str) -> int:
    if name not in VENVS:
        print(f"error: no venv named {name!r}; known: {', '.join(sorted(VENVS))}.", file=sys.stderr)
        return 2
    where, requirements = VENVS[name]
    target = where()
    print(f"[evalbench] creating {target} with {' '.join(requirements)} (a few minutes)", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=False).create(target)
    done = subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements])
    if done.returncode != 0:
        print(f"error: pip could not install {name}'s requirements into {target} (exit {done.returncode}); see "
              "pip's message above. Fix: check that the package index is reachable, then re-run.", file=sys.stderr)
        return 1
    print(f"[evalbench] {name} is ready: {target}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    names = argv or sorted(VENVS)
    return max(create(n) for n in names)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
