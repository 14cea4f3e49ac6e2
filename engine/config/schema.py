"""The validated, frozen experiment: what Hydra composes, pydantic checks."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from engine.config import names
from engine.config.errors import closest, format_validation_error
from engine.config.task import ExternalConfig, TaskConfig
from engine.config.task_data import DataConfig, FieldMap, FrozenConfig, TaskData
from engine.config.task_prompt import FewshotConfig, GenerationConfig, TaskPrompt
from engine.config.task_scoring import TaskScoring

# The task's models live in engine/config/task*.py; importers of this module find them here too.
__all__ = ["CacheConfig", "DataConfig", "Experiment", "ExternalConfig", "FewshotConfig", "FieldMap",
           "GenerationConfig", "HarnessConfig", "ModelConfig", "SuiteConfig", "TaskConfig", "TaskData", "TaskPrompt",
           "TaskScoring", "TrackingConfig", "check_harness_fits"]

_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class SuiteConfig(FrozenConfig):
    """Task specs run together; the aggregate is the mean of the tasks' primary metrics and of
    the nested suites' aggregates (a nested suite counts as one entry), with an SE."""

    name: str
    tasks: list[str] = []
    suites: list[str] = []  # nested suites, by name (conf/suite/<name>.yaml)
    aggregate: Literal["mean", "none"] = "mean"
    description: str | None = None

    @field_validator("tasks")
    @classmethod
    def _specs_have_no_empty_part(cls, v: list[str]) -> list[str]:
        for spec in v:
            if any(not part.strip() for part in str(spec).split(":")):
                raise ValueError(
                    f"suite task spec {spec!r} has an empty part (nothing before, between or after a `:`). "
                    "Fix: write `task` or `task:variant[:variant...]`, e.g. `mmlu:rc:5shot`"
                )
        return v

    @model_validator(mode="after")
    def _runs_something(self) -> SuiteConfig:
        if not self.tasks and not self.suites:
            raise ValueError(
                f"suite '{self.name}' lists no tasks and no nested suites: nothing to evaluate. Fix: list task specs "
                "in its `tasks:` (e.g. `suite.tasks=[mmlu:rc,gsm8k]`) or suites in `suites:`")
        return self


# The `model.` keys each provider reads (engine/models/hf.py, litellm_provider.py); a key set for a provider
# that ignores it is refused, never silently dropped (docs/architecture.md, "Boundaries").
PROVIDER_KEYS: dict[str, frozenset[str]] = {
    "hf": frozenset({"provider", "name", "path", "revision", "checkpoint_step", "dtype", "batch_size", "max_length",
                     "device", "generation_engine"}),
    "litellm": frozenset({"provider", "name", "checkpoint_step", "batch_size", "max_length", "api_base", "api_key_env",
                          "timeout_s", "supports_prompt_logprobs", "client"}),
}
_PROVIDER_EXAMPLE = {"litellm": "`model=litellm model.name=openai/<model> model.api_base=<URL>` for a served model",
                     "hf": "`model=smollm2 model.path=<checkpoint folder>` for weights on disk"}


class ModelConfig(FrozenConfig):
    provider: Literal["hf", "litellm"] = "hf"
    name: str
    path: str | None = None  # None with provider hf: the embedded SmolLM2 checkpoint
    revision: str | None = None
    checkpoint_step: int | None = Field(default=None, ge=0)  # parsed from `step<N>` in path when not given
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=2048, ge=2)  # the context and the token it predicts
    device: str = "cpu"
    api_base: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(default=120.0, gt=0.0)
    # litellm only: the server returns prompt logprobs (vLLM echo), so loglikelihood is exact.
    supports_prompt_logprobs: bool = False
    # litellm only: how generate requests travel. auto: the lean pooled OpenAI-compatible client for
    # `openai/...` models with an api_base, litellm otherwise; both give identical records.
    client: Literal["auto", "litellm", "lean"] = "auto"
    # hf only: prefix (shared-prefix reuse and in-flight batching on the flat forward, Llama models on
    # CPU) or plain (transformers' generate over a padded batch, the reference); docs/architecture.md,
    # "The generation path".
    generation_engine: Literal["prefix", "plain"] = "plain"

    @model_validator(mode="after")
    def _only_keys_the_provider_reads(self) -> ModelConfig:
        used = PROVIDER_KEYS[self.provider]
        unused = [k for k in sorted(self.model_fields_set - used)
                  if getattr(self, k) != type(self).model_fields[k].get_default()]
        if unused:
            key = unused[0]
            others = [p for p, keys in PROVIDER_KEYS.items() if key in keys]
            raise ValueError(
                f"`model.{key}` is set ({getattr(self, key)!r}), but provider {self.provider} does not use it, so it "
                f"would be silently ignored (read by: {', '.join(others) or 'no provider'}). Fix: drop "
                f"`model.{key}`" + (f", or evaluate through provider {others[0]} ({_PROVIDER_EXAMPLE[others[0]]})"
                                    if others else "") +
                f"; provider {self.provider} reads {', '.join(sorted(used - {'provider'}))}")
        return self

    @model_validator(mode="after")
    def _lean_needs_a_server(self) -> ModelConfig:
        if self.client == "lean" and (self.provider != "litellm" or not self.api_base):
            raise ValueError(
                "model.client=lean sends requests to an OpenAI-compatible server, so it needs "
                "model.provider=litellm and model.api_base=<server URL>; set them, or use model.client=auto")
        return self


class HarnessConfig(FrozenConfig):
    name: str = "default"
    # single_turn, tool_loop, multi_turn, openai_agents, or a user's `@scaffold`
    scaffold: Annotated[str, names.registered("scaffold", "`harness.scaffold`")] = "single_turn"
    tools: Annotated[list[str], names.registered("tool", "`harness.tools`")] = []  # built-in tools or a user's `@tool`s (engine/harness/tools.py)
    max_turns: int = Field(default=1, ge=1)
    concurrency: int = Field(default=4, ge=1)
    max_retries: int = Field(default=3, ge=0)
    retry_backoff_s: float = Field(default=1.0, ge=0.0)
    request_timeout_s: float = Field(default=600.0, gt=0.0)
    sandboxes: list[dict[str, Any]] = []
    auxiliary: dict[str, dict[str, Any]] = {}
    # Tool loops (engine/harness): how tool calls travel, per-tool options, trajectory limits.
    protocol: Literal["auto", "native", "text"] = "auto"  # auto: native when the model supports it
    tool_options: dict[str, dict[str, Any]] = {}  # e.g. {search: {corpus: data/corpus, k: 3}}
    system_prompt: str | None = None  # agent instructions; None: the scaffold's default
    max_total_tokens: int | None = Field(default=None, ge=1)  # prompt + completion tokens over one trajectory
    # Seconds of a trajectory's own model and tool time, not waiting (docs/architecture.md, "Harness limits").
    max_time_s: float | None = Field(default=None, gt=0.0)
    turns_field: str = "turns"  # multi_turn: the row column holding the scripted user turns

    @field_validator("sandboxes")
    @classmethod
    def _pools_have_known_keys(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The sandbox package (a layer above) declares its pool keys and backends (engine/config/names.py).
        pool_keys, backends = names.keys_of("sandbox_pool"), names.keys_of("sandbox_backend")
        for i, pool in enumerate(v):
            unknown = sorted(set(pool) - set(pool_keys))
            where = f"`harness.sandboxes[{i}]`" + (f" (pool {pool['name']!r})" if "name" in pool else "")
            if unknown:
                near = closest(unknown[0], pool_keys)
                raise ValueError(f"{where} has the unknown key {unknown[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                                 + f"; a pool's keys are {', '.join(pool_keys)}. Fix the key")
            if "name" not in pool or "backend" not in pool:
                raise ValueError(f"{where} needs a `name` and a `backend`. Fix: write e.g. "
                                 "`harness.sandboxes=[{name: local, backend: local}]`")
            if pool["backend"] not in backends:
                raise ValueError(f"{where} has backend {pool['backend']!r}, which is not a sandbox backend. Fix: set "
                                 f"`backend` to one of {', '.join(backends)}")
        return v

    @field_validator("auxiliary")
    @classmethod
    def _known_auxiliaries(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, aux in v.items():
            keys = names.keys_of(f"auxiliary.{name}")  # declared by the package that reads them (scoring/judge.py)
            if not keys:
                raise ValueError(f"`harness.auxiliary.{name}` is not an auxiliary provider; known: "
                                 f"{', '.join(names.auxiliaries())}. Fix: remove it, or configure "
                                 "`harness.auxiliary.judge` (see conf/harness/judge.yaml)")
            unknown = sorted(set(aux) - set(keys))
            if unknown:
                near = closest(unknown[0], keys)
                raise ValueError(f"`harness.auxiliary.{name}` has the unknown key {unknown[0]!r}"
                                 + (f" (did you mean {near[0]!r}?)" if near else "")
                                 + f"; its keys are {', '.join(keys)}. Fix the key (a judge model goes under "
                                 f"`harness.auxiliary.{name}.model`)")
            if isinstance(aux.get("model"), dict):
                try:
                    ModelConfig.model_validate(aux["model"])
                except ValidationError as err:
                    where = f"harness.auxiliary.{name}.model"
                    raise ValueError(str(format_validation_error(err, ModelConfig, where=where))
                                     .removeprefix("Invalid configuration: ").rstrip(".")) from None
        return v



class TrackingConfig(FrozenConfig):
    mlflow: bool = True
    tracking_uri: str = "sqlite:///mlruns.db"
    experiment_name: str | None = None  # default: the suite name, else the task name
    log_instance_table: bool = True


class CacheConfig(FrozenConfig):
    enabled: bool = True
    path: str = ".cache/evalbench/responses.sqlite"


class Experiment(FrozenConfig):
    # Modules to import before validation: they define `@task`, `@scorer`, `@tool`, `@scaffold`
    # (engine/config/plugins.py; installed `evalbench.plugins` entry points load too).
    imports: list[str] = []
    task: TaskConfig | None = None
    suite: SuiteConfig | None = None
    model: ModelConfig
    harness: HarnessConfig = HarnessConfig()
    tracking: TrackingConfig = TrackingConfig()
    cache: CacheConfig = CacheConfig()
    limit: int | None = Field(default=None, ge=1)  # None: every instance
    seed: int = 1234
    output_dir: str = "runs/latest"
    inspect: bool = False
    progress: bool = True

    @model_validator(mode="after")
    def _tools_need_generation(self) -> Experiment:
        if self.task is not None and self.suite is None:  # a suite's tasks are checked when it expands
            check_harness_fits(self.harness, self.task)
        return self

    @field_validator("imports", mode="before")
    @classmethod
    def _module_names(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        for name in v if isinstance(v, list) else []:
            if not isinstance(name, str) or not _MODULE.match(name):
                raise ValueError(f"`imports` lists {name!r}, which is not a module name. Fix: list dotted module "
                                 "names, e.g. `imports: [mypkg.evals]`")
        return v


def check_harness_fits(harness: HarnessConfig, task: TaskConfig) -> None:
    """A tool harness drives generations; a likelihood task (mc, rc, bpb) never generates, so the
    harness would be silently ignored and recorded as if used: refused (ValueError → exit 2)."""
    forms = task.formulations()
    if harness.scaffold == "single_turn" or task.external is not None or "generate" in forms:
        return
    raise ValueError(
        f"harness '{harness.name}' (scaffold {harness.scaffold}, tools {', '.join(harness.tools) or 'none'}) "
        f"cannot run task '{task.name}': it is scored by likelihood (formulation {'/'.join(forms)}), which "
        "compares the model's probabilities of fixed answers and never lets the model write, so no tool could "
        "be called and the harness would be ignored. Fix: run the task with `harness=default`, or use a "
        "generation task (e.g. `task=ellisande_qa`, `task=freshqa` or `task=gsm8k`)"
    )
