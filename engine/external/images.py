"""The Docker image of a sandboxed external eval: a build recipe per wrapper on top of the sandbox
base image, cached by a hash of the recipe (docs/architecture.md, "External evals").

The recipe is a full lock (every package pinned, `recipes.py`). The wheels are fetched on
the host with `pip download` for the image's Python and platform, then installed by pip inside
`docker build` with no network (`network_mode=none`): the build never needs a registry, and one
that cannot fetch a wheel fails before docker runs. The tag is `evalbench-ext-<wrapper>:<hash>`, the
hash covering the lock, the Dockerfile and the base image's id: a new recipe or a rebuilt base makes
a new image, an unchanged one is reused. One build at a time per tag on the machine (a file lock),
so parallel test workers wait for the first one instead of building twice.

`python -m engine.external.images inspect` builds (or finds) an image ahead of a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config.errors import ConfigError
from engine.external.recipes import LOCKS
from engine.sandbox.docker_backend import client, docker_unavailable_reason
from engine.sandbox.models import DEFAULT_DOCKER_IMAGE
from engine.types import stable_hash

PREFIX = "/opt/evalbench-ext"  # where the packages go inside the image (--target: no clash with Debian's)
RECIPE_LABEL = "evalbench.recipe"
# Debian bookworm's python3 (the base image) has no pip: pip runs from its own wheel, offline.
DOCKERFILE = """FROM {base} AS build
LABEL evalbench.recipe-build={tag}
COPY wheels /wheels
RUN python3 /wheels/{pip_wheel}/pip install --quiet --no-index --no-deps --find-links /wheels \\
    --disable-pip-version-check --no-warn-script-location --target {prefix}/lib -r /wheels/requirements.txt
FROM {base}
COPY --from=build {prefix} {prefix}
ENV PATH={prefix}/lib/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH={prefix}/lib
"""


class ImageRecipe(BaseModel):
    """What a sandboxed wrapper's image holds: the base image plus pinned wheels."""

    model_config = ConfigDict(frozen=True)

    wrapper: str
    requirements: tuple[str, ...]  # name==version, every dependency (installed with --no-deps)
    python_version: str = "3.11.2"  # the base image's python3: wheels are resolved for it
    platform: str = "manylinux_2_36_x86_64"  # the base image's glibc (Debian bookworm)
    base: str = DEFAULT_DOCKER_IMAGE


def recipe_from_lock(wrapper: str) -> ImageRecipe:
    return ImageRecipe(wrapper=wrapper, requirements=LOCKS[wrapper])


def _check_docker(recipe: ImageRecipe) -> Any:
    why = docker_unavailable_reason()
    if why is not None:
        raise ConfigError(
            f"The external eval wrapper '{recipe.wrapper}' runs its benchmark in a Docker container, and {why}. "
            "Fix: start Docker (`bash scripts/setup_system.sh` starts dockerd and builds the sandbox base image)."
        )
    try:
        return client().images.get(recipe.base)
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound; the SDK is imported lazily
        raise ConfigError(
            f"The image of the external eval wrapper '{recipe.wrapper}' is built on the sandbox base image "
            f"{recipe.base}, which does not exist (images cannot be pulled here). Fix: build it once with "
            "`bash scripts/ci/setup_sandboxes.sh`."
        ) from None


def tag_for(recipe: ImageRecipe, base_id: str) -> str:
    digest = stable_hash({"recipe": recipe.model_dump(mode="json"), "dockerfile": DOCKERFILE, "base": base_id})
    return f"evalbench-ext-{recipe.wrapper.replace('_', '-')}:{digest[:12]}"


def image_tag(recipe: ImageRecipe) -> str:
    return tag_for(recipe, _check_docker(recipe).id)


def image_exists(tag: str) -> bool:
    try:
        client().images.get(tag)
    except Exception:  # noqa: BLE001 - ImageNotFound
        return False
    return True


def _platforms(recipe: ImageRecipe) -> list[str]:
    # pip does not widen an explicit manylinux_2_N tag to older glibc versions: list them all.
    found = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", recipe.platform)
    if found is None:
        return [recipe.platform]
    major, minor, arch = int(found[1]), int(found[2]), found[3]
    return [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)] + [
        f"manylinux2014_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]


def _download(recipe: ImageRecipe, wheels: Path) -> None:
    (wheels / "requirements.txt").write_text("\n".join(recipe.requirements) + "\n")
    py = recipe.python_version
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--only-binary=:all:", "--python-version", py, "--implementation", "cp",
            "--abi", f"cp{''.join(py.split('.')[:2])}", *[a for p in _platforms(recipe) for a in ("--platform", p)],
            "-d", str(wheels), "-r", str(wheels / "requirements.txt")]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(ln for ln in done.stderr.splitlines() if "is ignored" not in ln)[-1500:]
        raise ConfigError(
            f"The image of the external eval wrapper '{recipe.wrapper}' cannot be built: pip could not download its "
            f"pinned wheels (engine/external/recipes.py LOCKS[{recipe.wrapper!r}]) for Python {py}:\n{tail}\nFix: make the "
            "package index reachable (pip's own configuration; a local folder of the wheels in PIP_FIND_LINKS "
            "works), then re-run."
        )


def _build(recipe: ImageRecipe, tag: str, context: Path) -> None:
    pip_wheel = next(p.name for p in (context / "wheels").glob("pip-*.whl"))
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=recipe.base, pip_wheel=pip_wheel, prefix=PREFIX, tag=tag))
    log: list[str] = []
    error = None
    for chunk in client().api.build(path=str(context), tag=tag, network_mode="none", rm=True, forcerm=True,
                                    pull=False, decode=True, labels={RECIPE_LABEL: tag}):
        log.append(str(chunk.get("stream") or ""))
        error = error or chunk.get("error")
    # The build stage (the wheels, ~100 MB) stays behind as untagged images: remove them.
    with contextlib.suppress(Exception):
        client().images.prune(filters={"dangling": True, "label": f"evalbench.recipe-build={tag}"})
    if error or not image_exists(tag):
        tail = ("".join(log) + str(error or ""))[-1500:]
        raise ConfigError(
            f"The image {tag} of the external eval wrapper '{recipe.wrapper}' failed to build:\n{tail}\nFix: check the "
            f"pins in engine/external/recipes.py LOCKS[{recipe.wrapper!r}] (every dependency, for Python "
            f"{recipe.python_version}) and that the base image {recipe.base} has python3, then re-run."
        )


def ensure_image(recipe: ImageRecipe) -> str:
    """The recipe's image tag, built first if it does not exist (ConfigError, exit 2, if it cannot be)."""
    tag = image_tag(recipe)
    if image_exists(tag):
        return tag
    lock_path = Path(tempfile.gettempdir()) / f"evalbench-image-{tag.replace(':', '-')}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait, then reuse it
        if image_exists(tag):
            return tag
        start = time.monotonic()
        print(f"[evalbench] building {tag} (once per recipe; downloads {len(recipe.requirements)} wheels, then "
              "docker build with no network; a few minutes)", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="evalbench-image-") as tmp:
            context = Path(tmp)
            (context / "wheels").mkdir()
            _download(recipe, context / "wheels")
            _build(recipe, tag, context)
        print(f"[evalbench] built {tag} in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return tag


def main(argv: list[str]) -> int:
    known = sorted(LOCKS)
    names = argv or known
    for name in names:
        if name not in known:
            print(f"error: no image recipe named {name!r}; known: {', '.join(known)}.", file=sys.stderr)
            return 2
        try:
            print(ensure_image(recipe_from_lock(name)))
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
