"""What a wrapper of an external benchmark provides, and the registry of wrappers.

A wrapper turns a task's `external:` block into the benchmark's own command (run in a subprocess
against the model gateway) and reads the benchmark's per-sample output back
(docs/architecture.md, "External evals").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeGuard

from pydantic import BaseModel, ConfigDict

from engine.config.errors import ConfigError
from engine.config.schema import Experiment, ExternalConfig, TaskConfig
from engine.external.images import ImageRecipe


class ExternalSample(BaseModel):
    """One per-sample line of the benchmark's output, in the benchmark's terms."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    prompt: str | None = None
    response: str | None = None  # generated text (generation benchmarks)
    choices: list[str] | None = None
    gold: Any = None
    logprobs: list[float] | None = None  # per choice (loglikelihood benchmarks)
    extracted: Any = None
    scores: dict[str, float] = {}
    request_texts: list[str] = []  # the prompts it sent, to find its requests among the gateway's


class ExternalOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    samples: list[ExternalSample] | None  # None: the benchmark wrote no per-sample scores
    aggregate: dict[str, float] = {}  # the benchmark's own aggregate scores (renamed like the samples')
    n: int = 0  # how many samples the aggregate is over


class OutputError(Exception):
    """The benchmark finished but its output cannot be read: the run fails with this message."""


class ExternalItem(BaseModel):
    """One selected instance as the engine built it (for wrappers that write their own dataset)."""

    model_config = ConfigDict(frozen=True)

    id: str
    query: str
    choices: list[str] | None = None
    gold: int | str | None = None  # choice index for choice tasks
    cluster: str | None = None


class WrapperContext(BaseModel):
    """What a wrapper needs to build its command."""

    model_config = ConfigDict(frozen=True)

    task: TaskConfig
    external: ExternalConfig
    exp: Experiment
    base_url: str  # the gateway, ".../v1"
    model_name: str
    model_dir: str | None  # the hf checkpoint (tokenizer) when there is one
    rows: list[dict[str, Any]]  # the selected rows (limit applied as for native runs)
    workdir: Path
    items: list[ExternalItem] = []  # the same instances, built
    # Where the benchmark sees `workdir` (inside its container); None: on the host, as is.
    inner_workdir: str | None = None

    def bench_path(self, *parts: str) -> str:
        """A path under the work dir as the benchmark's process sees it."""
        root = self.inner_workdir if self.inner_workdir is not None else str(self.workdir)
        return "/".join([root.rstrip("/"), *parts])


class Wrapper(Protocol):
    name: str

    def check_installed(self, external: ExternalConfig) -> None:
        """Raise ConfigError naming the fix when the benchmark's tool is missing."""

    def command(self, ctx: WrapperContext) -> tuple[list[str], dict[str, str]]:
        """(argv, extra environment); may write files under ctx.workdir."""

    def parse(self, ctx: WrapperContext) -> ExternalOutput:
        """Read the benchmark's output under ctx.workdir; raise OutputError when it cannot."""


class SandboxedWrapper(Wrapper, Protocol):
    """A wrapper whose benchmark runs in a container of its own image (SandboxedExternalEval,
    engine/external/sandboxed.py): `command` gives the argv inside the container."""

    def recipe(self) -> ImageRecipe:
        """The image: the sandbox base image plus the benchmark's pinned packages."""


def is_sandboxed(wrapper: Wrapper) -> TypeGuard[SandboxedWrapper]:
    return callable(getattr(wrapper, "recipe", None))


def wrapper_for(name: str, wrappers: dict[str, Wrapper]) -> Wrapper:
    found = wrappers.get(name)
    if found is None:
        raise ConfigError(
            f"`task.external.wrapper` is {name!r}, which is not a known external eval wrapper. Known wrappers: "
            f"{', '.join(sorted(wrappers))}. Fix: set `external.wrapper` to one of them (a new benchmark needs a "
            "wrapper in engine/external/, see docs/architecture.md \"External evals\")."
        )
    return found
