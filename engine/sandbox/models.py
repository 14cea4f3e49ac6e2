"""Typed values crossing the sandbox boundary: capabilities, limits, pool configs, exec results.

A capability is a plain string: ``python``, ``bash``, ``network`` or ``image:<name>``. Tasks and
tools declare the capabilities they need (``requires: [python]``); pools declare what they provide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.config import names

Capability = str
BackendName = Literal["local", "bwrap", "docker"]

PYTHON = "python"
BASH = "bash"
NETWORK = "network"
IMAGE_PREFIX = "image:"

_CAPABILITY_RE = re.compile(r"^(python|bash|network|image:[A-Za-z0-9][A-Za-z0-9_.:/@-]*)$")

#: Default cost order when a pool does not set ``cost``: the cheapest covering pool wins.
DEFAULT_BACKEND_COST: dict[str, float] = {"local": 1.0, "bwrap": 2.0, "docker": 3.0}

#: What each backend can provide at most (``image:<name>`` only on docker, for its own image).
BACKEND_CAPABILITIES: dict[str, frozenset[str]] = {
    "local": frozenset({PYTHON, BASH, NETWORK}),
    "bwrap": frozenset({PYTHON, BASH, NETWORK}),
    "docker": frozenset({PYTHON, BASH, NETWORK}),
}

DEFAULT_DOCKER_IMAGE = "evalbench-sandbox:latest"

# The limits a pool declares that contain model-written code, and which backends enforce them
# (docs/architecture.md, "Sandboxes"): ``network`` (limits.network: false, no network access) and
# ``filesystem`` (the host's files hidden: only a private work dir and read-only system paths).
# ``local`` runs a host process: rlimits, yes; neither of these.
NETWORK_LIMIT = "network"
FILESYSTEM_LIMIT = "filesystem"
BACKEND_ENFORCES: dict[str, frozenset[str]] = {
    "local": frozenset(),
    "bwrap": frozenset({NETWORK_LIMIT, FILESYSTEM_LIMIT}),
    "docker": frozenset({NETWORK_LIMIT, FILESYSTEM_LIMIT}),
}
LIMIT_WORDS = {NETWORK_LIMIT: "the network is not blocked (limits.network: false)",
               FILESYSTEM_LIMIT: "the host's world-readable files are not hidden"}

Isolation = Literal["required", "best_effort"]


def validate_capability(cap: str) -> Capability:
    """Return ``cap`` stripped, or raise ``ValueError`` if it is not a known capability form."""
    cap = cap.strip()
    if not _CAPABILITY_RE.match(cap):
        raise ValueError(
            f"unknown capability {cap!r}: expected python, bash, network or image:<name>"
        )
    return cap


def normalize_requires(requires: Iterable[str] | str | None) -> frozenset[Capability]:
    """Turn a task's or tool's ``requires`` (None, one string or a list) into a capability set."""
    if requires is None:
        return frozenset()
    if isinstance(requires, str):
        requires = [requires]
    return frozenset(validate_capability(c) for c in requires)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SandboxLimits(_Frozen):
    """Resource limits applied to every execution in a pool."""

    wall_time_s: float = Field(10.0, gt=0, description="wall-clock timeout of one execution")
    cpu_s: int = Field(10, gt=0, description="CPU seconds (RLIMIT_CPU; SIGXCPU then SIGKILL)")
    memory_mb: int = Field(1024, gt=16, description="address space / cgroup memory in MiB")
    output_bytes: int = Field(1 << 20, gt=0, description="stdout+stderr cap; beyond it: killed")
    file_size_mb: int = Field(64, gt=0, description="largest file one execution may write")
    open_files: int = Field(256, gt=8, description="RLIMIT_NOFILE")
    max_procs: int = Field(64, gt=1, description="processes/threads (RLIMIT_NPROC or pids limit)")
    cpus: float = Field(1.0, gt=0, description="CPU quota (docker only)")
    network: bool = Field(False, description="network access; must match the `network` capability")
    isolation: Isolation = Field(
        "required", description="required: a backend that cannot enforce these limits (local) is refused before the "
        "run; best_effort: it runs anyway (trusted code), with one WARNING line naming what is not enforced")


_HOST_SCHEMES = ("unix://", "tcp://", "ssh://", "http://", "https://")


class DockerHost(_Frozen):
    """One Docker daemon a docker pool runs containers on (a string in YAML is its ``url``)."""

    url: str = Field(description="unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host")
    concurrency: int | None = Field(None, ge=1, description="most sandboxes on this host at once")
    tls_verify: bool = Field(False, description="verify the daemon's certificate (tcp)")
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if not v.startswith(_HOST_SCHEMES):
            raise ValueError(f"docker host {v!r}: expected unix://, tcp:// or ssh:// URL")
        return v


class SandboxPoolConfig(_Frozen):
    """One pool of identical sandboxes (``harness.sandboxes`` lists these)."""

    name: str
    backend: BackendName
    provides: tuple[Capability, ...] = (PYTHON, BASH)
    instances: int = Field(2, ge=1, description="most sandboxes this pool may hold")
    concurrency: int | None = Field(
        None, ge=1, description="most concurrent executions (<= instances; default instances)"
    )
    limits: SandboxLimits = SandboxLimits()
    image: str | None = Field(None, description="docker image (default evalbench-sandbox:latest)")
    cost: float | None = Field(None, description="routing cost; default local < bwrap < docker")
    docker_hosts: tuple[DockerHost, ...] = Field(
        (), description="docker daemons the pool spreads over (default: DOCKER_HOST or the local one)")

    @field_validator("docker_hosts", mode="before")
    @classmethod
    def _hosts(cls, v: object) -> object:
        if isinstance(v, str | Mapping):
            v = [v]
        if isinstance(v, Iterable):
            return tuple({"url": h} if isinstance(h, str) else h for h in v)
        return v

    @field_validator("provides", mode="before")
    @classmethod
    def _caps(cls, v: object) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, Iterable):
            raise ValueError("provides must be a list of capabilities")
        return tuple(sorted({validate_capability(str(c)) for c in v}))

    @model_validator(mode="after")
    def _consistent(self) -> SandboxPoolConfig:
        allowed = BACKEND_CAPABILITIES[self.backend]
        image = self.effective_image
        for cap in self.provides:
            if cap.startswith(IMAGE_PREFIX):
                if self.backend != "docker" or cap[len(IMAGE_PREFIX):] != image:
                    raise ValueError(
                        f"pool {self.name!r}: {cap!r} needs backend docker with image "
                        f"{cap[len(IMAGE_PREFIX):]!r}"
                    )
            elif cap not in allowed:
                raise ValueError(f"pool {self.name!r}: backend {self.backend} cannot provide {cap}")
        if (NETWORK in self.provides) != self.limits.network:
            raise ValueError(
                f"pool {self.name!r}: capability 'network' and limits.network must agree"
            )
        if self.docker_hosts and self.backend != "docker":
            raise ValueError(f"pool {self.name!r}: docker_hosts is only meaningful for docker")
        urls = [h.url for h in self.docker_hosts]
        if len(set(urls)) != len(urls):
            raise ValueError(f"pool {self.name!r}: a docker host is listed twice: {urls}")
        if self.image is not None and self.backend != "docker":
            raise ValueError(f"pool {self.name!r}: image is only meaningful for docker")
        return self

    @property
    def effective_image(self) -> str | None:
        if self.backend != "docker":
            return None
        return self.image or DEFAULT_DOCKER_IMAGE

    @property
    def effective_cost(self) -> float:
        return self.cost if self.cost is not None else DEFAULT_BACKEND_COST[self.backend]

    @property
    def max_size(self) -> int:
        """Most sandboxes used at once: min(instances, concurrency)."""
        return min(self.instances, self.concurrency or self.instances)

    def covers(self, requires: frozenset[Capability]) -> bool:
        return requires <= frozenset(self.provides)

    @property
    def declared_limits(self) -> frozenset[str]:
        """The containment this pool declares: its files are hidden, and no network unless granted."""
        return frozenset({FILESYSTEM_LIMIT} | (set() if self.limits.network else {NETWORK_LIMIT}))

    @property
    def unenforced_limits(self) -> tuple[str, ...]:
        """Declared limits its backend cannot enforce (network first): empty for bwrap and docker."""
        missing = self.declared_limits - BACKEND_ENFORCES[self.backend]
        return tuple(limit for limit in (NETWORK_LIMIT, FILESYSTEM_LIMIT) if limit in missing)


KilledReason = Literal[
    "timeout", "output_limit", "cpu_limit", "memory_limit", "file_size_limit", "signal", "error"
]


class ExecResult(_Frozen):
    """Outcome of one execution in a sandbox. ``ok`` is exit code 0 with nothing killed."""

    exit_code: int | None = Field(description="process exit code; 128+N when killed by signal N")
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    killed_reason: KilledReason | None = None
    reason_detail: str | None = Field(None, description="human-readable cause, e.g. SIGXCPU")
    duration_s: float = 0.0
    truncated: bool = Field(False, description="output exceeded limits.output_bytes")
    backend: str = ""
    pool: str = ""
    host: str = Field("", description="docker host URL when the pool lists docker_hosts")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None and not self.timed_out

    @property
    def reason(self) -> str | None:
        """Why the execution failed (None when ``ok``)."""
        if self.ok:
            return None
        if self.killed_reason is not None:
            return f"{self.killed_reason}: {self.reason_detail}" if self.reason_detail \
                else self.killed_reason
        last = next((ln for ln in reversed(self.stderr.splitlines()) if ln.strip()), "")
        return f"exit code {self.exit_code}: {last[:200]}" if last else f"exit code {self.exit_code}"


class Demand(_Frozen):
    """Expected executions for one capability set: instances x samples x executions."""

    requires: frozenset[Capability]
    instances: int = Field(1, ge=0)
    samples: int = Field(1, ge=0)
    executions: int = Field(1, ge=0)

    @field_validator("requires", mode="before")
    @classmethod
    def _req(cls, v: object) -> frozenset[str]:
        return normalize_requires(v)  # type: ignore[arg-type]

    @property
    def count(self) -> int:
        return self.instances * self.samples * self.executions


class PoolPlan(_Frozen):
    pool: str
    demand: int
    size: int


class SandboxPlan(_Frozen):
    """The planner's decision: how many sandboxes each pool starts before the run."""

    budget: int
    pools: tuple[PoolPlan, ...]
    unrouted: tuple[frozenset[Capability], ...] = ()

    def size_of(self, pool: str) -> int:
        for p in self.pools:
            if p.pool == pool:
                return p.size
        return 0

# Config validates `harness.sandboxes` before this layer runs: it learns a pool's keys and the backends here.
names.declare_keys("sandbox_pool", SandboxPoolConfig.model_fields)
names.declare_keys("sandbox_backend", get_args(BackendName))
