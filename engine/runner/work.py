"""What the runner core runs and returns: work items, their outcomes, and what a valid answer is.

A `WorkItem` is a model request or a job (docs/architecture.md, "One execution layer"); its
`Outcome` holds the result or the error, never both unnoticed. `check_response` is the one rule
for a provider's answer: empty or malformed output is a `ProviderError`, never a score, never cached.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.runner.cache import WorkResult
from engine.types import (
    GenerateRequest,
    GenerateResponse,
    InstanceError,
    LoglikelihoodResponse,
    ProviderError,
    TokenLogprobsRequest,
    TokenLogprobsResponse,
    WorkRequest,
    WorkResponse,
)


@dataclass(frozen=True)
class JobContext:
    """What a job may use: the core's model call and the resources opened for this run (a router)."""

    call_model: Callable[[GenerateRequest, float | None], Awaitable[tuple[GenerateResponse, int, float]]]
    resources: Any = None


Job = Callable[[JobContext], Awaitable[WorkResult]]


class Interrupted(Exception):
    """The run was cancelled (Ctrl-C): `outcomes` holds every item that finished before."""

    def __init__(self, outcomes: dict[str, Outcome]):
        super().__init__("interrupted")
        self.outcomes = outcomes


class WorkItem(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    key: str  # the cache key: a hash of everything that can change the result
    request: WorkRequest | None = None
    job: Job | None = None
    cacheable: bool = True
    uses_model: bool = True  # False: a job that never calls the model (execution scoring): no warm-up for it


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    result: WorkResult | None = None
    error: InstanceError | None = None
    latency_s: float = 0.0
    cached: bool = False
    attempts: int = 0

    @property
    def response(self) -> WorkResponse | None:
        return self.result.response if self.result is not None else None


def check_response(request: WorkRequest, response: WorkResponse, local: bool) -> None:
    """Refuse output that must never be scored or cached (raises ProviderError).

    An empty completion from a server is a failed request (`empty_response`, retried). From an
    in-process model (`local`) it is the model's own answer: it generated tokens that ended at a
    stop sequence at once (HumanEval's "\ndef "), scored like any other answer."""
    if isinstance(request, GenerateRequest):
        if not isinstance(response, GenerateResponse):
            raise ProviderError("a generate request got a non-generate response", kind="malformed_response")
        if not local and not response.text.strip() and not response.tool_calls:
            raise ProviderError("the model server returned an empty completion", kind="empty_response", transient=True)
        return
    if isinstance(request, TokenLogprobsRequest):
        if not isinstance(response, TokenLogprobsResponse) or (
                request.tokens is not None and response.tokens != request.tokens):
            raise ProviderError("the token-logprobs response does not match the prompt", kind="malformed_response")
        values = [*response.logprobs[1:], *response.top_logprobs[1:], response.next_logprob]
        if any(x is None or not math.isfinite(x) for x in values):
            raise ProviderError("the token-logprobs response holds a missing or non-finite logprob",
                                kind="malformed_response")
        return
    if not isinstance(response, LoglikelihoodResponse) or len(response.logprobs) != len(request.continuations):
        raise ProviderError("the loglikelihood response does not match the continuations", kind="malformed_response")
    if any(not math.isfinite(x) for x in response.logprobs):
        raise ProviderError("the loglikelihood response holds a non-finite logprob", kind="malformed_response")
