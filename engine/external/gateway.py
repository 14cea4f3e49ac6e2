"""The model gateway: the evaluated model (any provider) as an OpenAI-compatible HTTP endpoint on
loopback, for the benchmark loops of external evals (docs/architecture.md, "External evals").

Every request the benchmark sends becomes a `WorkItem` submitted to the runner core
(`RunnerCore.submit`): the cache, the core's one concurrency limit, retries, `check_response`, the
cache write, and micro-batching of concurrent requests into provider batches all apply, so a re-run
of a finished external eval calls no model. The gateway keeps the list of requests it served with
their cache keys (`served`), which the external eval maps to its samples.

Endpoints: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (text or
token-id prompts; `echo=true` with `logprobs` or `max_tokens=0` returns prompt-token logprobs, the
loglikelihood path of lm-eval's `local-completions`; hf provider only).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from engine.runner.cache import cache_key
from engine.runner.core import RunnerCore
from engine.runner.work import Outcome, WorkItem
from engine.types import (
    ChatMessage,
    GenerateRequest,
    GenerateResponse,
    SamplingParams,
    TokenLogprobsRequest,
    TokenLogprobsResponse,
    WorkRequest,
)

if TYPE_CHECKING:
    from aiohttp import web

SCAFFOLD = "gateway"  # part of every gateway cache key: the same request from any external eval is one row
CLIENT_ERRORS = {"bad_request", "unsupported", "context_length", "config"}  # HTTP 400, not worth a retry


class ServedRequest(BaseModel):
    """One prompt the gateway served (an HTTP call may carry several)."""

    model_config = ConfigDict(frozen=True)

    index: int
    endpoint: str
    kind: str
    key: str
    text: str | None  # the prompt as text (token-id prompts decoded by the provider when it can)
    cached: bool
    attempts: int
    started: float
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class BadRequest(Exception):
    pass


def _prompts(body: dict[str, Any]) -> list[str | list[int]]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [list(prompt)]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return [p if isinstance(p, str) else [int(t) for t in p] for p in prompt]
    raise BadRequest("`prompt` must be a string, a list of strings, a list of token ids or a list of such lists")


def _sampling(body: dict[str, Any], default_max: int = 256) -> SamplingParams:
    stop = body.get("stop") or ()
    return SamplingParams(
        max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or default_max),
        temperature=float(body.get("temperature") or 0.0),
        top_p=float(body["top_p"]) if body.get("top_p") is not None else 1.0,
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        seed=body.get("seed"),
    )


def _content(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts: the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _echo_choice(i: int, r: TokenLogprobsResponse, with_next: bool) -> dict[str, Any]:
    texts = list(r.token_texts) + ([r.next_text] if with_next else [])
    lps: list[float | None] = list(r.logprobs) + ([r.next_logprob] if with_next else [])
    tops: list[dict[str, float] | None] = [None]
    tops += [{t or "": float(lp or 0.0)} for t, lp in zip(r.top_texts[1:], r.top_logprobs[1:], strict=True)]
    if with_next:
        tops.append({r.next_text: r.next_logprob})
    offsets, pos = [], 0
    for t in texts:
        offsets.append(pos)
        pos += len(t)
    return {"index": i, "text": r.text + (r.next_text if with_next else ""), "finish_reason": "length",
            "logprobs": {"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}}


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    from aiohttp import web  # only a run with an external eval serves: other runs never import aiohttp

    return web.json_response(payload, status=status)


async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """A bug in a handler answers 500 with its message (and prints the traceback) instead of a bare page
    (wrapped by `web.middleware` where the app is made)."""
    from aiohttp import web

    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as err:  # noqa: BLE001 - the benchmark gets an OpenAI-style error and retries or fails
        traceback.print_exc(file=sys.stderr)
        return _json({"error": {"message": f"{type(err).__name__}: {err}", "type": "internal",
                                            "code": "internal"}}, status=500)


class ModelGateway:
    """`async with ModelGateway(core) as gw:` serves the core's model at `gw.base_url` until exit."""

    def __init__(self, core: RunnerCore, host: str = "127.0.0.1", port: int = 0, unix_path: str | None = None):
        self.core = core
        self.host, self.port = host, port
        # Also served on this unix socket: the one way out of a sandboxed external eval's container
        # (engine/external/sandboxed.py), which has no network.
        self.unix_path = unix_path
        self.model_name = core.provider.identity.name
        self.served: list[ServedRequest] = []
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def __aenter__(self) -> ModelGateway:
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[web.middleware(_json_errors)])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # port 0: the one bound
        if self.unix_path is not None:
            await web.UnixSite(self._runner, self.unix_path).start()
            os.chmod(self.unix_path, 0o666)  # the container's unprivileged user connects to it
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def model_calls(self) -> int:
        return self.core.model_calls

    # -- one request through the core --------------------------------------------------------------
    async def _submit(self, endpoint: str, request: WorkRequest) -> Outcome:
        key = cache_key(self.core.provider.identity, request, SCAFFOLD, [], 0)
        started = time.time()
        out = await self.core.submit(WorkItem(key=key, request=request))
        resp = out.response
        if isinstance(request, GenerateRequest):
            text: str | None = request.render_text()
        else:
            text = resp.text if isinstance(resp, TokenLogprobsResponse) else getattr(request, "text", None)
        usage = getattr(resp, "usage", None)
        self.served.append(ServedRequest(
            index=len(self.served), endpoint=endpoint, kind=request.kind, key=key, text=text, cached=out.cached,
            attempts=out.attempts, started=started, latency_s=round(time.time() - started, 6),
            prompt_tokens=usage.prompt_tokens if usage else 0, completion_tokens=usage.completion_tokens if usage else 0,
            error=None if out.error is None else f"{out.error.kind}: {out.error.message}"))
        return out

    @staticmethod
    def _error(status: int, message: str, kind: str) -> web.Response:
        return _json({"error": {"message": message, "type": kind, "code": kind}}, status=status)

    def _failed(self, outcomes: list[Outcome]) -> web.Response | None:
        for o in outcomes:
            if o.error is not None or o.response is None:
                kind = o.error.kind if o.error else "internal"
                return self._error(400 if kind in CLIENT_ERRORS else 500, o.error.message if o.error else "no response", kind)
        return None

    # -- endpoints ---------------------------------------------------------------------------------
    async def _models(self, _: web.Request) -> web.Response:
        return _json({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": 0, "owned_by": "evalbench"}]})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as err:
            raise BadRequest(f"the body is not JSON ({err})") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        if body.get("stream"):
            raise BadRequest("streaming is not supported by the evalbench gateway; send stream=false")
        if int(body.get("n") or 1) != 1:
            raise BadRequest("only n=1 is supported; send one request per sample")
        return body

    def _decode(self, ids: list[int]) -> str:
        tokenizer = getattr(self.core.provider, "tokenizer", None)  # hf only: others take text prompts
        if tokenizer is None:
            raise BadRequest("token-id prompts for generation need a provider with a local tokenizer (hf); "
                             "send text prompts (lm-eval: tokenized_requests=False)")
        return str(tokenizer.decode(ids))

    async def _completions(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            prompts = _prompts(body)
            echo, max_tokens = bool(body.get("echo")), body.get("max_tokens")
            scoring = echo and (body.get("logprobs") is not None or max_tokens == 0)
            if scoring:
                reqs: list[WorkRequest] = [TokenLogprobsRequest(tokens=tuple(p)) if isinstance(p, list)
                                       else TokenLogprobsRequest(text=p) for p in prompts]
            else:
                sampling = _sampling(body, default_max=16)
                reqs = [GenerateRequest(prompt=p if isinstance(p, str) else self._decode(p), sampling=sampling)
                        for p in prompts]
        except (BadRequest, ValueError, TypeError) as err:
            return self._error(400, str(err), "bad_request")
        outcomes = list(await asyncio.gather(*(self._submit("/v1/completions", r) for r in reqs)))
        if (failed := self._failed(outcomes)) is not None:
            return failed
        choices = []
        for i, (req, o) in enumerate(zip(reqs, outcomes, strict=True)):
            resp = o.response
            if isinstance(resp, TokenLogprobsResponse):
                choices.append(_echo_choice(i, resp, with_next=max_tokens != 0))
            elif isinstance(resp, GenerateResponse):
                text = (req.render_text() if echo and isinstance(req, GenerateRequest) else "") + resp.text
                choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": resp.finish_reason or "stop"})
        return _json({"id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion",
                                  "created": int(time.time()), "model": self.model_name, "choices": choices,
                                  "usage": self._usage(outcomes)})

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            messages = tuple(ChatMessage(role=m["role"], content=_content(m.get("content")),
                                         tool_calls=tuple(m["tool_calls"]) if m.get("tool_calls") else None,
                                         tool_call_id=m.get("tool_call_id"), name=m.get("name"))
                             for m in body.get("messages") or ())
            if not messages:
                raise BadRequest("`messages` is empty")
            req = GenerateRequest(messages=messages, sampling=_sampling(body), tools=tuple(body.get("tools") or ()))
        except (BadRequest, ValueError, TypeError, KeyError) as err:
            return self._error(400, f"bad request: {err}", "bad_request")
        out = await self._submit("/v1/chat/completions", req)
        if (failed := self._failed([out])) is not None:
            return failed
        resp = out.response
        assert isinstance(resp, GenerateResponse)
        message: dict[str, Any] = {"role": "assistant", "content": resp.text}
        if resp.tool_calls:
            message["tool_calls"] = list(resp.tool_calls)
        finish = "tool_calls" if resp.tool_calls else (resp.finish_reason or "stop")
        return _json({"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                                  "created": int(time.time()), "model": self.model_name,
                                  "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                  "usage": self._usage([out])})

    @staticmethod
    def _usage(outcomes: list[Outcome]) -> dict[str, int]:
        p = sum(o.response.usage.prompt_tokens for o in outcomes if o.response is not None)
        c = sum(o.response.usage.completion_tokens for o in outcomes if o.response is not None)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
