"""The `litellm` provider: any API or OpenAI-compatible server (vLLM, SGLang, `transformers serve`).

Generate requests to an OpenAI-compatible `api_base` (`model.name=openai/...`) take the lean path
(engine/models/openai_compat.py: one pooled aiohttp session, no litellm import); every other API
goes through litellm. `EVALBENCH_LITELLM_ONLY=1` (or `lean=False`) sends everything through litellm.

Loglikelihoods are served only when the server returns prompt logprobs (`echo` with `logprobs`,
as vLLM does); otherwise a clear error, never an approximation from generated tokens.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from engine.config.schema import ModelConfig
from engine.models.identity import model_identity
from engine.models.openai_compat import (
    OpenAICompatClient,
    lean_eligible,
    read_response,
    retry_after_seconds,
    sampling_fields,
)
from engine.types import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    ProviderError,
    TokenUsage,
    truncate_at_stop,
)

_TRANSIENT = (
    "RateLimitError",
    "APIConnectionError",
    "Timeout",
    "ServiceUnavailableError",
    "InternalServerError",
    "BadGatewayError",
    "APIError",
)


def _litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # deferred: importing litellm costs ~4 s

    litellm.suppress_debug_info = True
    return litellm


PROBE_TIMEOUT_S = 3.0  # an api_base that accepts no connection within this is unreachable
# Exception classes (anywhere in the cause chain) that mean the connection failed or timed out.
_TIMEOUTS = ("Timeout", "APITimeoutError", "ReadTimeout", "ConnectTimeout", "SocketTimeoutError", "TimeoutError")
_CONNECTION = ("APIConnectionError", "ConnectError", "ReadError", "RemoteProtocolError", "ClientOSError",
               "ServerDisconnectedError", "ClientConnectionError")


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The error and its causes (litellm wraps openai wraps httpx wraps aiohttp wraps the OS)."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _retry_after(err: Exception) -> float | None:
    """The server's Retry-After (seconds) from the HTTP response an API error carries, if any."""
    for source in (getattr(getattr(err, "response", None), "headers", None),
                   getattr(err, "litellm_response_headers", None), getattr(err, "headers", None)):
        value = (source or {}).get("retry-after") or (source or {}).get("Retry-After")
        if value is not None:
            return retry_after_seconds(value)
    return None


def _http_status_error(causes: list[BaseException]) -> bool:
    """The server answered with an HTTP error status (as opposed to a 200 litellm could not parse)."""
    return any(type(c).__name__ == "HTTPStatusError"
               or (type(c).__module__.split(".")[0] == "openai" and getattr(c, "status_code", None))
               for c in causes)


def _as_provider_error(err: Exception) -> ProviderError:
    """A typed error; its `kind` says what went wrong (docs/architecture.md, "One execution layer").

    litellm reports a reset connection and an unparsable 200 body as an `InternalServerError`
    (HTTP 500) too: the cause chain tells them apart, so an instance's error names the real failure.
    """
    name = type(err).__name__
    causes = list(_chain(err))
    retry_after = _retry_after(err)
    text = f"{name}: {str(err)[:500]}"
    if any(isinstance(c, asyncio.TimeoutError) or type(c).__name__ in _TIMEOUTS for c in causes):
        return ProviderError(text, transient=True, kind="timeout", retry_after=retry_after)
    if any(isinstance(c, ConnectionError) or type(c).__name__ in _CONNECTION for c in causes):
        return ProviderError(f"connection error: {causes[-1]} ({name})"[:600], transient=True, kind="connection_error")
    if not _http_status_error(causes) and (
        any(isinstance(c, json.JSONDecodeError) for c in causes) or name in ("InternalServerError", "APIError")
    ):
        # A 200 whose body is not JSON, not an object, or has no choices (a proxy's login page, ...).
        return ProviderError(f"the server's response could not be read as a completion ({text})", transient=True,
                             kind="malformed_response")
    transient = name in _TRANSIENT or isinstance(err, ConnectionError)
    return ProviderError(text, transient=transient, kind=name, retry_after=retry_after)


def _first_choice(resp: Any) -> Any:
    """The first choice; a response without one is empty (retried), never an IndexError."""
    choices = getattr(resp, "choices", None)
    if not choices:
        raise ProviderError("the server returned no choices", kind="empty_response", transient=True)
    return choices[0]


def _response(resp: Any, request: GenerateRequest) -> GenerateResponse:
    """litellm's completion object as our response (ValueError/TypeError on a field of the wrong type)."""
    choice = _first_choice(resp)
    if request.prompt is not None:
        text, tool_calls = choice.text or "", ()
    else:
        text = choice.message.content or ""
        tool_calls = tuple(tc.model_dump() for tc in (choice.message.tool_calls or ()))
    usage = getattr(resp, "usage", None)
    text, stopped = truncate_at_stop(text, request.sampling.stop)
    return GenerateResponse(
        text=text,
        finish_reason="stop" if stopped else choice.finish_reason,
        tool_calls=tool_calls,
        usage=TokenUsage(
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        ),
    )


def _echo_logprob(resp: Any, context_chars: int) -> tuple[float, int, bool]:
    """(summed logprob, tokens, greedy) of the echoed tokens past the context (TypeError, IndexError
    and the like when the server's lists hold nulls or are shorter than its offsets)."""
    lp = _first_choice(resp).logprobs
    if lp is None:
        raise ProviderError("the server returned no prompt logprobs for an echo request", kind="unsupported")
    offsets, token_lps = list(lp.text_offset or []), list(lp.token_logprobs or [])
    tops = list(lp.top_logprobs or [])
    if not offsets or not token_lps:
        raise ProviderError("the server returned no prompt logprobs for an echo request", kind="unsupported")
    idx = [i for i, off in enumerate(offsets) if off >= context_chars]
    total = sum(float(token_lps[i]) for i in idx)
    greedy = all(tops and tops[i] and max(tops[i].values()) <= token_lps[i] + 1e-9 for i in idx)
    return total, len(idx), greedy


class LiteLLMProvider:
    def __init__(self, cfg: ModelConfig, lean: bool | None = None):
        """`lean`: generate through the lean OpenAI-compatible client; None: whenever the model is
        an `openai/` model at an `api_base` (unless EVALBENCH_LITELLM_ONLY=1)."""
        self.cfg = cfg
        self.identity = model_identity(cfg, None)
        self.max_batch = 1
        self._api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if cfg.api_base and self._api_key is None:
            self._api_key = "not-needed"  # local OpenAI-compatible servers ignore the key
        if lean is None:
            lean = lean_eligible(cfg.name, cfg.api_base) and os.environ.get("EVALBENCH_LITELLM_ONLY", "") in ("", "0")
        self.lean: OpenAICompatClient | None = None
        if lean and cfg.api_base:
            self.lean = OpenAICompatClient(cfg.api_base, cfg.name, self._api_key, cfg.timeout_s)

    def _common(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.cfg.name, "timeout": self.cfg.timeout_s, "num_retries": 0}
        if self.cfg.api_base:
            kwargs["api_base"] = self.cfg.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        return kwargs

    async def probe(self) -> None:
        """Refuse an unreachable `api_base` once, at start, rather than after the full retry schedule
        of every request: a TCP connect within PROBE_TIMEOUT_S. What the server answers is not judged
        here (servers differ in what `/models` serves); a hosted API (no api_base) is not probed."""
        base = self.cfg.api_base
        if not base:
            return
        url = urlsplit(base)
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            port = None
        if url.scheme not in ("http", "https") or not url.hostname or port is None:
            raise ProviderError(
                f"model.api_base '{base}' is not an http(s) URL with a host and port. Fix: write it as the "
                "server's OpenAI-compatible root, e.g. `model.api_base=http://127.0.0.1:8000/v1`.", kind="config")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), PROBE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as err:
            if isinstance(err, asyncio.TimeoutError):
                cause = f"no connection within {PROBE_TIMEOUT_S:g} s"
            else:  # asyncio's strerror is "Connect call failed (...)": the errno says why
                cause = (os.strerror(err.errno) if err.errno else str(err) or type(err).__name__).lower()
            raise ProviderError(
                f"cannot reach the model server at model.api_base={base} ({cause}), so no request was sent. "
                f"Fix: start the server (e.g. `vllm serve MODEL --port {port}`) and wait until it listens, or "
                "point `model.api_base` at the host and port where it runs.", kind="config") from err
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # the server closed first: it was reachable, which is all we asked

    async def _generate_one(self, request: GenerateRequest) -> GenerateResponse:
        if self.lean is not None:
            return await self.lean.generate(request)
        lm = _litellm()
        params = sampling_fields(request.sampling)
        try:
            if request.prompt is not None:
                resp = await lm.atext_completion(prompt=request.prompt, **params, **self._common())
            else:
                messages = [m.model_dump(exclude_none=True) for m in request.messages or ()]
                if request.tools:
                    params["tools"] = list(request.tools)
                resp = await lm.acompletion(messages=messages, **params, **self._common())
        except Exception as err:  # every provider failure becomes a typed error
            raise _as_provider_error(err) from err
        return read_response(lambda: _response(resp, request), "response could not be read as a completion")

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        if len(requests) == 1:  # the common case (max_batch 1): no gather task per request
            return [await self._generate_one(requests[0])]
        return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

    async def _prompt_logprob(self, context: str, continuation: str) -> tuple[float, int, bool]:
        lm = _litellm()
        try:
            resp = await lm.atext_completion(
                prompt=context + continuation, max_tokens=0, echo=True, logprobs=1, temperature=0.0, **self._common()
            )
        except Exception as err:
            raise _as_provider_error(err) from err
        return read_response(lambda: _echo_logprob(resp, len(context)), "prompt logprobs could not be read")

    async def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]:
        if not self.cfg.supports_prompt_logprobs:
            raise ProviderError(
                f"model '{self.cfg.name}' through litellm cannot compute loglikelihoods: the server is not "
                "declared to return prompt logprobs. Fix: use a generation variant of the task, or a "
                "server that echoes prompt logprobs (e.g. vLLM) with `model.supports_prompt_logprobs=true`, "
                "or the in-process `model=smollm2`/provider hf.",
                kind="unsupported",
            )
        out = []
        for req in requests:
            scored = [await self._prompt_logprob(req.context, c) for c in req.continuations]
            uncond = None
            if req.unconditional_context is not None:
                uncond = tuple([(await self._prompt_logprob(req.unconditional_context, c))[0] for c in req.continuations])
            out.append(
                LoglikelihoodResponse(
                    logprobs=tuple(s[0] for s in scored),
                    token_counts=tuple(s[1] for s in scored),
                    is_greedy=tuple(s[2] for s in scored),
                    unconditional_logprobs=uncond,
                )
            )
        return out

    async def warm(self) -> None:
        """Import litellm (~4 s) before the first request's timeout starts counting; the lean path
        needs no litellm for generation (loglikelihoods still go through litellm). The runner calls
        it when a first request must be sent, so the server's reachability is checked here: a fully
        cached re-run needs no server."""
        await self.probe()
        if self.lean is not None and not self.cfg.supports_prompt_logprobs:
            return
        await asyncio.to_thread(_litellm)

    async def aclose(self) -> None:
        if self.lean is not None:
            await self.lean.aclose()
        if "litellm" in sys.modules:  # close pooled HTTP sessions before the event loop ends
            await sys.modules["litellm"].close_litellm_async_clients()
