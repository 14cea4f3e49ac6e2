"""Requests and responses: the only kinds of work a provider serves, their hashing, and ProviderError.

Dependency-free by design (pydantic and the standard library only; docs/architecture.md, "Layers").
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator


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
