"""The lean OpenAI-compatible path: generate requests sent straight to an `api_base` server.

litellm translates many APIs, and costs for it: ~4 s of import before the first request and a
few milliseconds of CPU per call (pydantic round trips, logging, cost lookup), which on 2 cores
caps an eval at a few hundred requests per second and far fewer in flight than allowed. For a
server that already speaks the OpenAI API (`model.name=openai/...` with `model.api_base`, i.e.
vLLM, SGLang, `transformers serve`, a gateway), this client sends the same JSON litellm sends
through one pooled aiohttp session and parses the answer with `json` alone
(docs/architecture.md, "The lean OpenAI-compatible path").

Its responses and errors are the ones the litellm path gives (same text, finish reason, tool
calls, usage; the same error kinds, transience and Retry-After), so records and cache rows do not
depend on the path; tests/test_openai_compat.py checks both against the benchmark server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from engine.types import GenerateRequest, GenerateResponse, ProviderError, SamplingParams, TokenUsage, truncate_at_stop

T = TypeVar("T")

if TYPE_CHECKING:
    import aiohttp

# Prefixes that mean "this server speaks the OpenAI API" for litellm, which strips them from the
# model name it sends; only these take the lean path (any other prefix needs litellm's translation).
LEAN_PREFIXES = ("openai/",)

# litellm's exception class per HTTP status (its names are the error kinds records already carry).
_STATUS_KIND = {
    400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError",
    408: "Timeout", 422: "UnprocessableEntityError", 429: "RateLimitError", 500: "InternalServerError",
    502: "BadGatewayError", 503: "ServiceUnavailableError", 504: "Timeout",
}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# litellm's map_finish_reason for the values OpenAI-compatible servers send besides OpenAI's own.
_FINISH = {"stop_sequence": "stop", "end_turn": "stop", "eos": "stop", "eos_token": "stop", "max_tokens": "length",
           "tool_use": "tool_calls", "content_filtered": "content_filter", "error": "stop"}
_OPENAI_FINISH = {"stop", "length", "tool_calls", "function_call", "content_filter"}


def lean_eligible(name: str, api_base: str | None) -> bool:
    """An OpenAI-compatible server named by `api_base` (what the lean path serves)."""
    return bool(api_base) and name.startswith(LEAN_PREFIXES)


def sampling_fields(s: SamplingParams) -> dict[str, Any]:
    """The OpenAI request fields of the sampling parameters: both API paths send exactly these."""
    fields: dict[str, Any] = {"max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p}
    if s.stop:
        fields["stop"] = list(s.stop)
    if s.seed is not None:
        fields["seed"] = s.seed
    return fields


def retry_after_seconds(value: Any) -> float | None:
    """A Retry-After header's value in seconds (both API paths read it so); None when absent."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None  # an HTTP date: the exponential backoff applies


def _finish_reason(value: Any) -> str:
    if value in _OPENAI_FINISH:
        return str(value)
    return _FINISH.get(str(value), "stop")  # litellm: an unmapped reason is "stop"


class OpenAICompatClient:
    """One pooled HTTP session per event loop; `generate` is one POST per request."""

    def __init__(self, api_base: str, name: str, api_key: str | None, timeout_s: float):
        self.base = api_base.rstrip("/")
        self.model = name.split("/", 1)[1] if name.startswith(LEAN_PREFIXES) else name
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._session: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None

    def session(self) -> aiohttp.ClientSession:
        import aiohttp  # ~0.15 s: only a run that sends requests pays it (docs/architecture.md, "Start-up and exit")

        loop = asyncio.get_running_loop()
        if self._session is None or self._session[0] is not loop or self._session[1].closed:
            # No connection cap here: the runner core's concurrency limit is the one limit.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = (loop, aiohttp.ClientSession(connector=connector, headers=self.headers,
                                                         timeout=aiohttp.ClientTimeout(total=self.timeout_s)))
        return self._session[1]

    def body(self, request: GenerateRequest) -> tuple[str, dict[str, Any]]:
        """(endpoint, JSON body): the fields litellm sends for the same request."""
        body: dict[str, Any] = {"model": self.model}
        if request.prompt is not None:
            endpoint = "/completions"
            body["prompt"] = request.prompt
        else:
            endpoint = "/chat/completions"
            body["messages"] = [m.model_dump(exclude_none=True) for m in request.messages or ()]
        body.update(sampling_fields(request.sampling))
        if request.prompt is None and request.tools:
            body["tools"] = list(request.tools)
        return endpoint, body

    async def _post(self, endpoint: str, body: dict[str, Any]) -> tuple[int, Any, bytes]:
        import aiohttp

        try:
            async with self.session().post(self.base + endpoint, data=json.dumps(body)) as resp:
                return resp.status, resp.headers, await resp.read()
        except asyncio.TimeoutError as err:
            raise ProviderError(f"Timeout: no response within {self.timeout_s:g} s", transient=True,
                                kind="timeout") from err
        except (aiohttp.ClientError, OSError) as err:
            raise ProviderError(f"connection error: {err or type(err).__name__} (APIConnectionError)"[:600],
                                transient=True, kind="connection_error") from err

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        endpoint, body = self.body(request)
        status, headers, raw = await self._post(endpoint, body)
        if status != 200:
            kind = _STATUS_KIND.get(status, "APIError")
            transient = status in _TRANSIENT_STATUS or status >= 500
            raise ProviderError(f"{kind}: HTTP {status}: {raw[:500].decode('utf-8', 'replace')}", transient=transient,
                                kind="timeout" if kind == "Timeout" else kind, retry_after=retry_after_seconds(
                                    headers.get("Retry-After") if headers is not None else None))
        try:
            data = json.loads(raw)
        except ValueError as err:
            raise ProviderError(f"the server's response could not be read as a completion (not JSON: "
                                f"{raw[:200].decode('utf-8', 'replace')!r})", transient=True,
                                kind="malformed_response") from err
        return read_response(lambda: _completion(data, request), "response could not be read as a completion")

    async def aclose(self) -> None:
        if self._session is not None and not self._session[1].closed:
            try:
                await self._session[1].close()
            except RuntimeError:
                pass  # its event loop is gone: nothing left to close on it
        self._session = None


def read_response(read: Callable[[], T], what: str) -> T:
    """`read()` of a server's answer; a field of the wrong type, a null or a short list in it (TypeError,
    AttributeError, IndexError, ValueError, pydantic's included) is a retried `malformed_response`,
    never an exception the run cannot name. `what`: "<part> could not be read as ...", for the message."""
    try:
        return read()
    except ProviderError:
        raise
    except (TypeError, AttributeError, IndexError, ValueError) as err:
        raise ProviderError(f"the server's {what} ({type(err).__name__}: {str(err)[:200]})", transient=True,
                            kind="malformed_response") from err


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"usage.{key} is {value!r}, not a token count")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where} is {type(value).__name__}, not text")
    return value


def _completion(data: Any, request: GenerateRequest) -> GenerateResponse:
    """The response of an OpenAI-compatible completion body; ValueError/TypeError when a field has
    the wrong type (the caller reports it as a malformed response, never as an answer)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    choices = data.get("choices")
    if not choices and isinstance(data.get("error"), dict | str):  # an error sent with status 200
        err = data["error"]
        message = err.get("message") if isinstance(err, dict) else err
        raise ProviderError(f"APIError: the server answered 200 with an error: {str(message)[:300]}",
                            transient=True, kind="APIError")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise ProviderError("the server returned no choices", kind="empty_response", transient=True)
    choice = choices[0]
    tool_calls: tuple[dict[str, Any], ...]
    if request.prompt is not None:
        text, tool_calls = _text(choice.get("text"), "choices[0].text"), ()
    else:
        message = choice.get("message")
        if message is not None and not isinstance(message, dict):
            raise ValueError(f"choices[0].message is {type(message).__name__}, not an object")
        message = message or {}
        text = _text(message.get("content"), "choices[0].message.content")
        raw_calls = message.get("tool_calls") or ()
        if not isinstance(raw_calls, list | tuple) or not all(isinstance(tc, dict) for tc in raw_calls):
            raise ValueError("choices[0].message.tool_calls is not a list of objects")
        tool_calls = tuple(_tool_call(tc) for tc in raw_calls)
    usage = data.get("usage") or {}
    if not isinstance(usage, dict):
        raise ValueError(f"usage is {type(usage).__name__}, not an object")
    s = request.sampling
    text, stopped = truncate_at_stop(text, s.stop)
    return GenerateResponse(
        text=text,
        finish_reason="stop" if stopped else _finish_reason(choice.get("finish_reason")),
        tool_calls=tool_calls,
        usage=TokenUsage(prompt_tokens=_count(usage, "prompt_tokens"), completion_tokens=_count(usage, "completion_tokens")),
    )


def _tool_call(tc: dict[str, Any]) -> dict[str, Any]:
    """litellm's `ChatCompletionMessageToolCall.model_dump()`: function, id, type."""
    fn = tc.get("function") or {}
    return {"function": {"arguments": fn.get("arguments"), "name": fn.get("name")}, "id": tc.get("id"),
            "type": tc.get("type") or "function"}
