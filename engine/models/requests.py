"""The two kinds of request a provider serves, and their responses."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


Request = GenerateRequest | LoglikelihoodRequest


class TokenUsage(Frozen):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class GenerateResponse(Frozen):
    kind: Literal["generate"] = "generate"
    text: str
    finish_reason: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    usage: TokenUsage = TokenUsage()


class LoglikelihoodResponse(Frozen):
    kind: Literal["loglikelihood"] = "loglikelihood"
    logprobs: tuple[float, ...]
    token_counts: tuple[int, ...]
    is_greedy: tuple[bool, ...]
    unconditional_logprobs: tuple[float, ...] | None = None
    usage: TokenUsage = TokenUsage()


Response = GenerateResponse | LoglikelihoodResponse


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

    def __init__(self, message: str, *, transient: bool = False, kind: str = "provider_error"):
        super().__init__(message)
        self.transient = transient
        self.kind = kind


__all__ = [
    "ChatMessage",
    "SamplingParams",
    "GenerateRequest",
    "LoglikelihoodRequest",
    "Request",
    "GenerateResponse",
    "LoglikelihoodResponse",
    "Response",
    "TokenUsage",
    "ProviderError",
    "stable_hash",
    "request_hash",
    "truncate_at_stop",
]
