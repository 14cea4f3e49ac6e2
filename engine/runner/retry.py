"""Which failed model calls the runner core tries again (docs/architecture.md, "One execution layer").

One rule for every path that calls a model: a batch of single-turn requests (`RunnerCore._run_batch`)
and a job's model call (`RunnerCore.call_model`, which every scaffold's turns go through: tool_loop,
multi_turn, openai_agents). A transient `ProviderError` (rate limit, 5xx, reset connection, empty or
malformed answer) and a request that hit `harness.request_timeout_s` are retried with backoff, at most
`harness.max_retries` times; anything else is final. A job's call used to retry only `ProviderError`s,
so a tool loop's turn that timed out ended its trajectory at once (issue 24, item 9).
"""

from __future__ import annotations

import asyncio

from engine.config.schema import HarnessConfig
from engine.types import ProviderError


def is_transient(err: BaseException) -> bool:
    """A failure another attempt may not repeat: a request timeout or a transient ProviderError."""
    return isinstance(err, asyncio.TimeoutError) or (isinstance(err, ProviderError) and err.transient)


def should_retry(err: BaseException, attempt: int, h: HarnessConfig) -> bool:
    """Try again after `attempt` failed with `err` (attempts count from 1)."""
    return is_transient(err) and attempt <= h.max_retries
