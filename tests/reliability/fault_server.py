"""A fault-injecting OpenAI-compatible server on loopback (evalbench issue 10).

It answers "What is A+B?" with the right sum, so accuracy 1.0 proves that every sample got its
own answer, and injects one fault, chosen per test with `FaultServer.set_fault` (or
`POST /_control` with the same fields as JSON):

    kind            what a faulted attempt gets
    rate_limit      429 with `Retry-After: retry_after` (when set)
    server_error    500
    unavailable     503 with `Retry-After: retry_after` (when set)
    reset           the TCP connection reset (RST) before any response byte
    hang            nothing within `hang_s` (longer than any client timeout a test uses)
    malformed       200 with a truncated JSON body
    empty_choices   200 with `"choices": []`
    empty_content   200 with an empty completion text
    bad_gateway     502 with an HTML body (a reverse proxy whose backend is down)
    html            200 with an HTML page (a proxy's login page) instead of JSON
    error_body      200 whose JSON is an error object, no choices (some proxies answer errors so)
    wrong_shape     200 JSON whose choice has the wrong types (a string message, a numeric text)
    bad_usage       200 with the right answer but token counts that are not numbers
    truncated       200 whose body ends before its Content-Length (the connection closes midway)
    lone_surrogate  200 with the right answer, then a line holding a lone UTF-16 surrogate ("\\ud800",
                    valid JSON that no UTF-8 record can hold): an answer, not a fault

`times=k` faults the first k attempts of every question (transient); `times=None` faults every
attempt (permanent). `only` restricts the fault to those questions ("A+B" keys). Every request
is logged (`FaultServer.log`) with its question, time and what it got.

Serves `/v1/chat/completions`, `/v1/completions` and `/v1/models`. Runs on its own event loop in
a daemon thread, so synchronous tests can drive `python -m engine` subprocesses against it.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

QUESTION = re.compile(r"What is (\d+)\s*\+\s*(\d+)\?")
KINDS = ("none", "rate_limit", "server_error", "unavailable", "reset", "hang", "malformed",
         "empty_choices", "empty_content", "bad_gateway", "html", "error_body", "wrong_shape", "bad_usage",
         "truncated", "lone_surrogate")


@dataclass(frozen=True)
class Fault:
    kind: str = "none"
    times: int | None = None  # faulted attempts per question; None: every attempt
    retry_after: float | None = None  # seconds, sent with 429/503
    only: frozenset[str] | None = None  # questions ("A+B") the fault applies to; None: all
    hang_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {KINDS}")


@dataclass(frozen=True)
class Hit:
    key: str  # "A+B", or "?" when the prompt holds no question
    endpoint: str
    attempt: int  # 1-based, per question
    at: float  # time.monotonic() on arrival
    outcome: str  # "ok" or the fault kind


@dataclass
class _State:
    fault: Fault = field(default_factory=Fault)
    attempts: Counter[str] = field(default_factory=Counter)
    log: list[Hit] = field(default_factory=list)


def _prompt_text(body: dict) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content") or "") for m in body["messages"])
    prompt = body.get("prompt", "")
    return "\n".join(prompt) if isinstance(prompt, list) else str(prompt)


def _answer(text: str) -> tuple[str, str]:
    """(question key, answer) for the last "What is A+B?" in the prompt."""
    found = QUESTION.findall(text)
    if not found:
        return "?", "I only add numbers."
    a, b = found[-1]
    return f"{a}+{b}", str(int(a) + int(b))


def _completion(body: dict, chat: bool, text: str, empty_choices: bool) -> dict:
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    model = body.get("model", "faulty")
    if chat:
        choices = [] if empty_choices else [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
        return {"id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": choices, "usage": usage}
    choices = [] if empty_choices else [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]
    return {"id": "cmpl-fault", "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage}


def _reset(request: web.Request) -> None:
    """Abort the connection with an RST (SO_LINGER 0), as a crashed proxy does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultServer:
    """`with FaultServer() as srv:` → `srv.base_url` ("http://127.0.0.1:PORT/v1")."""

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- control ---------------------------------------------------------------------------------
    def set_fault(self, fault: Fault) -> None:
        """A new fault; attempt counts and the log start afresh."""
        with self._lock:
            self._state = _State(fault=fault)

    @property
    def log(self) -> list[Hit]:
        with self._lock:
            return list(self._state.log)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- serving ---------------------------------------------------------------------------------
    def _decide(self, key: str, endpoint: str) -> tuple[Fault, int, str]:
        with self._lock:
            st = self._state
            st.attempts[key] += 1
            attempt = st.attempts[key]
            f = st.fault
            applies = f.kind != "none" and (f.only is None or key in f.only)
            faulted = applies and (f.times is None or attempt <= f.times)
            outcome = f.kind if faulted else "ok"
            st.log.append(Hit(key=key, endpoint=endpoint, attempt=attempt, at=time.monotonic(), outcome=outcome))
            return f, attempt, outcome

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = await request.json()
        key, answer = _answer(_prompt_text(body))
        fault, _, outcome = self._decide(key, "chat" if chat else "completions")
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        if outcome == "rate_limit":
            return web.json_response({"error": {"message": "rate limited", "type": "rate_limit_error"}},
                                     status=429, headers=headers)
        if outcome == "server_error":
            return web.json_response({"error": {"message": "internal error", "type": "server_error"}}, status=500)
        if outcome == "unavailable":
            return web.json_response({"error": {"message": "overloaded", "type": "server_error"}},
                                     status=503, headers=headers)
        if outcome == "bad_gateway":
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if outcome == "html":
            return web.Response(text="<html><body>Please log in</body></html>", content_type="text/html")
        if outcome == "reset":
            _reset(request)
            raise asyncio.CancelledError  # the connection is gone: nothing to write
        if outcome == "hang":
            await asyncio.sleep(fault.hang_s)
        if outcome == "malformed":
            return web.Response(text='{"id": "chatcmpl-fault", "choices": [{"index": 0, "mess',
                                content_type="application/json")
        if outcome == "error_body":
            return web.json_response({"error": {"message": "upstream model crashed", "type": "server_error"}})
        if outcome == "truncated":
            resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "4096"})
            await resp.prepare(request)
            await resp.write(b'{"id": "chatcmpl-fault", "choices": [')
            _reset(request)
            raise asyncio.CancelledError  # the connection is gone midway
        text = "" if outcome == "empty_content" else answer + ("\n\ud800 end" if outcome == "lone_surrogate" else "")
        out = _completion(body, chat, text, outcome == "empty_choices")
        if outcome == "wrong_shape":
            out["choices"][0] = {"index": 0, "message": answer, "finish_reason": "stop"} if chat else {
                "index": 0, "text": int(answer), "finish_reason": "stop"}
        if outcome == "bad_usage":
            out["usage"] = {"prompt_tokens": "ten", "completion_tokens": [2], "total_tokens": None}
        return web.json_response(out)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def _text(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _models(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "faulty", "object": "model", "owned_by": "tests"}]})

    async def _control(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        if data.get("only") is not None:
            data["only"] = frozenset(data["only"])
        self.set_fault(Fault(**data))
        return web.json_response({"ok": True})

    # -- lifecycle -------------------------------------------------------------------------------
    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._text)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/_control", self._control)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Handlers still hanging (fault `hang`) outlive the runner: end them before the loop closes.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def start(self) -> FaultServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
