"""The types that cross package boundaries: requests, responses, records, the provider contract.

Dependency-free by design (pydantic and the standard library only): every package of `engine/`
may import it, and it imports nothing of `engine/` (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


# ---------------------------------------------------------------------------------------------
# Requests and responses: the only two kinds of work a provider serves.
class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_SURROGATE = re.compile("[\ud800-\udfff]")  # a str holds a pair as one code point: any left is lone


def valid_unicode(value: Any) -> Any:
    """`value` with every lone surrogate in its strings replaced by U+FFFD. JSON may spell one
    (`"\\ud800"`: a broken server's detokenizer, a hostile completion), Python's json accepts it,
    and UTF-8 cannot encode it: a record or cache row holding one could never be written."""
    if isinstance(value, str):
        if value.isascii():
            return value
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {valid_unicode(k): valid_unicode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(valid_unicode(v) for v in value)
    return value


class ChatMessage(Frozen):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[dict[str, Any], ...] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class SamplingParams(Frozen):
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


class GenerateRequest(Frozen):
    """Chat messages (or a raw prompt) to complete."""

    kind: Literal["generate"] = "generate"
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    sampling: SamplingParams = SamplingParams()
    tools: tuple[dict[str, Any], ...] = ()

    def render_text(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return "\n".join(f"[{m.role}] {m.content}" for m in self.messages or ())


class LoglikelihoodRequest(Frozen):
    """Exact log P(continuation | context) for each continuation; one shared context."""

    kind: Literal["loglikelihood"] = "loglikelihood"
    context: str
    continuations: tuple[str, ...]
    # PMI normalization scores each continuation against this context too ("Answer:").
    unconditional_context: str | None = None


class TokenLogprobsRequest(Frozen):
    """The logprob of every token of a prompt given the tokens before it, and the greedy next token:
    what an OpenAI-style `/v1/completions` call with `echo=true, logprobs` returns (the model
    gateway of external evals, docs/architecture.md "External evals"). `tokens` as the client
    tokenized them, or `text` for the provider to tokenize (no special tokens)."""

    kind: Literal["token_logprobs"] = "token_logprobs"
    tokens: tuple[int, ...] | None = None
    text: str | None = None


Request = GenerateRequest | LoglikelihoodRequest  # what tasks build
WorkRequest = Request | TokenLogprobsRequest  # what the runner core serves (the gateway adds token logprobs)


class TokenUsage(Frozen):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class GenerateResponse(Frozen):
    kind: Literal["generate"] = "generate"
    text: str
    finish_reason: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    usage: TokenUsage = TokenUsage()

    @field_validator("text", "tool_calls", mode="before")
    @classmethod
    def _encodable(cls, v: Any) -> Any:
        return valid_unicode(v)


class LoglikelihoodResponse(Frozen):
    kind: Literal["loglikelihood"] = "loglikelihood"
    logprobs: tuple[float, ...]
    token_counts: tuple[int, ...]
    is_greedy: tuple[bool, ...]
    unconditional_logprobs: tuple[float, ...] | None = None
    usage: TokenUsage = TokenUsage()


class TokenLogprobsResponse(Frozen):
    """Per prompt token: its id, text, logprob (None for the first: nothing predicts it) and the best
    token at that position with its logprob; then the greedy next token after the prompt."""

    kind: Literal["token_logprobs"] = "token_logprobs"
    tokens: tuple[int, ...]
    text: str  # the prompt decoded as one string
    token_texts: tuple[str, ...]
    logprobs: tuple[float | None, ...]
    top_texts: tuple[str | None, ...]
    top_logprobs: tuple[float | None, ...]
    next_token: int
    next_text: str
    next_logprob: float
    usage: TokenUsage = TokenUsage()


Response = GenerateResponse | LoglikelihoodResponse
WorkResponse = Response | TokenLogprobsResponse


def stable_hash(payload: Any) -> str:
    """sha256 over canonical JSON: the basis of request, task and cache keys."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def truncate_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Cut at the first stop sequence (servers may ignore `stop`); (text, whether it stopped)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def request_hash(request: Request) -> str:
    return stable_hash(request)[:16]


class ProviderError(Exception):
    """A request failed at the provider; `transient` ones are retried with backoff."""

    def __init__(self, message: str, *, transient: bool = False, kind: str = "provider_error",
                 retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.kind = kind
        self.retry_after = retry_after  # seconds the server asked to wait (Retry-After)


# ---------------------------------------------------------------------------------------------
# Scores and records (docs/architecture.md, "The normalized record").

class ScoreSummary(BaseModel):
    """One reported score with its error bars."""

    model_config = ConfigDict(frozen=True)

    value: float
    n: int
    stderr: float
    ci_low: float
    ci_high: float
    mde: float
    clustered_stderr: float | None = None
    n_clusters: int | None = None
    # None: the analytic SE of a mean (Miller 2024). "bootstrap": a non-decomposable metric (a user's
    # corpus-level `@metric`), whose SE is the spread of the metric over resampled questions.
    stderr_method: Literal["bootstrap"] | None = None

    @property
    def reported_stderr(self) -> float:
        """The SE the CI and MDE use: clustered when the task declares clusters."""
        return self.clustered_stderr if self.clustered_stderr is not None else self.stderr


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class ModelIdentity(_Record):
    """What was evaluated: enough to tell two checkpoints apart."""

    name: str
    provider: str
    path: str | None = None
    revision: str | None = None
    checkpoint_step: int | None = None
    content_hash: str | None = None  # the model folder: every file but a documented few (models/identity.py)
    api_base: str | None = None  # where the model is served (litellm)
    tokenizer_hash: str | None = None  # tokenizer files and chat template
    options_hash: str | None = None  # serving options that change outputs (dtype, max_length)

    @property
    def label(self) -> str:
        step = f"@step{self.checkpoint_step}" if self.checkpoint_step is not None else ""
        return f"{self.name}{step}"


class InstanceError(_Record):
    kind: str
    message: str
    attempts: int


class TrajectoryStep(_Record):
    """One model call, tool call, tool result or sandbox execution."""

    type: Literal["model", "tool_call", "tool_result", "sandbox", "judge", "limit", "user"]
    content: dict[str, Any]
    started: float | None = None
    duration_s: float | None = None
    tokens: int | None = None


class InstanceRecord(_Record):
    task_hash: str
    task_spec: str
    instance_id: str
    sample_index: int = 0
    request_hash: str | None = None
    request: dict[str, Any] | None = None
    prompt_text: str | None = None
    gold: Any = None
    choices: list[str] | None = None
    cluster: str | None = None
    output_text: str | None = None
    logprobs: list[float] | None = None
    extracted_answer: Any = None
    scores: dict[str, float] = {}
    error: InstanceError | None = None
    latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 1  # provider calls it took (retries included); 0 when it came from the cache
    trajectory: list[TrajectoryStep] = []


class RunCounts(_Record):
    n: int
    scored: int
    errored: int


class AgentSummary(_Record):
    """What a tool-using harness's model actually did over a run (engine/harness/agent_report.py)."""

    questions: int
    tool_calls_per_question: float
    questions_without_tool_call: int
    turns_per_question: float
    # answered (a reply or a submit), max_turns, max_tokens, max_time, error
    end_reasons: dict[str, int] = {}
    calls_by_tool: dict[str, int] = {}
    questions_by_tool: dict[str, int] = {}  # questions with at least one call of the tool

    def metrics(self) -> dict[str, float]:
        out = {"agent.tool_calls_per_question": self.tool_calls_per_question,
               "agent.questions_without_tool_call": float(self.questions_without_tool_call),
               "agent.turns_per_question": self.turns_per_question}
        out.update({f"agent.end_reason.{k}": float(v) for k, v in self.end_reasons.items()})
        out.update({f"agent.questions_calling.{k}": float(v) for k, v in self.questions_by_tool.items()})
        return out


# Run kinds (docs/architecture.md, "Run kinds"): what a run is, in its run folder's record and in
# its MLflow tag `evalbench.kind`. The names are defined here once; readers select by them.
TaskRunKind = Literal["task", "external"]  # the kinds with a run folder of per-question records
RunKind = Literal[TaskRunKind, "suite", "sweep"]
TASK_RUN: Literal["task"] = "task"  # one task spec evaluated by the engine: experiment.json + instances.jsonl
EXTERNAL_RUN: Literal["external"] = "external"  # one task spec run by a benchmark's own loop: the same files
SUITE_RUN: Literal["suite"] = "suite"  # a suite's parent run: suite.json, the aggregate over its task runs
SWEEP_RUN: Literal["sweep"] = "sweep"  # a sweep's parent run: sweep.json; in MLflow one per experiment written to
RUN_KINDS: tuple[RunKind, ...] = (TASK_RUN, EXTERNAL_RUN, SUITE_RUN, SWEEP_RUN)
# Runs with per-question records (a run folder with instances.jsonl): what compare, the series,
# the viewer and sync read as task runs; suite and sweep parents hold aggregates only.
QUESTION_RUN_KINDS: frozenset[TaskRunKind] = frozenset({TASK_RUN, EXTERNAL_RUN})


def legacy_run_kind(config: dict[str, Any]) -> TaskRunKind:
    """The kind of a record written before records carried one: every such record is a task run,
    an external one when its task names an external eval."""
    task = config.get("task") if isinstance(config, dict) else None
    return EXTERNAL_RUN if isinstance(task, dict) and task.get("external") else TASK_RUN


class RunRecord(_Record):
    run_id: str
    # "task" or "external" (a run folder never holds a suite or sweep parent); absent in records
    # written before kinds existed, which are task runs (filled in by `_fill_kind`).
    kind: TaskRunKind = TASK_RUN
    experiment_id: str
    experiment_name: str
    created: str
    engine_version: str
    git_revision: str | None
    config: dict[str, Any]
    model: ModelIdentity
    task_spec: str
    task_name: str
    task_hash: str
    harness: str
    suite: str | None
    seeds: dict[str, int]
    status: Literal["finished", "failed", "partial", "interrupted"]  # interrupted: Ctrl-C, n = what finished
    duration_s: float
    counts: RunCounts
    prompt_tokens: int = 0
    completion_tokens: int = 0
    primary_metric: str
    scores: dict[str, ScoreSummary]
    run_dir: str
    mlflow_run_id: str | None = None
    # Tool-using harnesses only (absent in older records): what the agent did, and what it was told.
    agent: AgentSummary | None = None
    agent_protocol: str | None = None  # native or text
    agent_system_prompt: str | None = None  # as sent in the first request
    tool_schemas: list[dict[str, Any]] | None = None

    @property
    def aggregate_only(self) -> bool:
        """An external eval that reported its aggregate only: its scores have no per-question
        values, so no SE, CI or MDE exist (the stored zeros are placeholders, never shown)."""
        return bool((self.config.get("external_run") or {}).get("aggregate_only"))

    @model_validator(mode="before")
    @classmethod
    def _fill_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") is None:
            return {**data, "kind": legacy_run_kind(data.get("config") or {})}
        return data


class Provider(Protocol):
    """A model under evaluation: serves batches of the two request kinds."""

    identity: ModelIdentity
    max_batch: int

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateResponse]: ...

    async def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Extension registries (docs/architecture.md, "Extensions"): each package keeps one per kind.
_T = TypeVar("_T")

HOW_TO_REGISTER = (
    "To add one, define it with `{decorator}` in a module of yours and list that module under `imports:` "
    "(e.g. `imports: [mypkg.evals]` in the config, or `'imports=[mypkg.evals]'` on the command line), or "
    "expose the module as an entry point of group `evalbench.plugins` in your package's pyproject.toml"
)


def origin_of(obj: Any) -> str:
    """`module:qualname` of a function or class (what a duplicate-name error shows)."""
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}:{getattr(obj, '__qualname__', None) or getattr(obj, '__name__', repr(obj))}"


def unknown_name_message(kind: str, name: str, known: list[str] | set[str], decorator: str, where: str = "") -> str:
    """One paragraph: the unknown name, the closest known ones, every known one, how to register one."""
    names = sorted(known)
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.5) or [k for k in names if name.lower() in k.lower()][:3]
    hint = f" Did you mean {', '.join(repr(k) for k in near)}?" if near else ""
    place = f" in {where}" if where else ""
    return (f"Unknown {kind} {name!r}{place}.{hint} Known {kind}s: {', '.join(names) or '(none)'}. "
            + HOW_TO_REGISTER.format(decorator=decorator) + ".")


class Registry(Generic[_T]):
    """Name -> object of one kind (tasks, scorers, tools, scaffolds), each with its origin.

    Two definitions under one name are an error naming both (`module:qualname`); defining the same
    object again (a module imported twice) replaces it. `on_add` lets a package tell a lower layer
    the name (config validates names without importing the packages that define them).
    """

    def __init__(self, kind: str, decorator: str, error: type[Exception] = ValueError,
                 on_add: Callable[[str, _T], None] | None = None):
        self.kind = kind
        self.decorator = decorator
        self.error = error
        self.on_add = on_add
        self._items: dict[str, _T] = {}
        self._origins: dict[str, str] = {}

    def add(self, name: str, obj: _T, origin: str | None = None) -> _T:
        origin = origin or origin_of(obj)
        old = self._origins.get(name)
        if old is not None and old != origin:
            raise self.error(
                f"Two {self.kind}s are named {name!r}: {old} and {origin}. Names must be unique. Fix: rename one "
                f"(`{self.decorator}(name=\"...\")`), or stop importing one of the two modules.")
        self._items[name] = obj
        self._origins[name] = origin
        if self.on_add is not None:
            self.on_add(name, obj)
        return obj

    def get(self, name: str, where: str = "") -> _T:
        if name not in self._items:
            raise self.error(unknown_name_message(self.kind, name, set(self._items), self.decorator, where))
        return self._items[name]

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
