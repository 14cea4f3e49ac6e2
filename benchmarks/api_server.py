"""A latency-controlled OpenAI-compatible server for benchmarks/api_speed.py (evalbench issue 13).

Every completion waits `--latency` seconds (asyncio.sleep: no CPU), then answers the last
"What is A+B?" of the prompt with the sum, so accuracy 1.0 proves that every sample got its own
answer. It records when the first request arrived, when the last response left and the time
integral of the requests in flight, so a client's start-up, request phase, tail and concurrency
are measured server-side, the same way for every framework.

    python benchmarks/api_server.py --latency 0.05        # prints "PORT <n>" once it listens

    GET  /_stats   {"requests", "first_request", "last_response", "mean_in_flight", "peak_in_flight"}
                   (times are time.time() on this machine)
    POST /_reset   forget the counters before the next client

Serves `/v1/chat/completions`, `/v1/completions` and `/v1/models`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

from aiohttp import web

QUESTION = re.compile(r"What is (\d+)\s*\+\s*(\d+)\?")


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.first_request: float | None = None
        self.last_response: float | None = None
        self.in_flight = 0
        self.peak = 0
        self.area = 0.0  # ∫ in_flight dt
        self._t = 0.0

    def _advance(self, now: float) -> None:
        if self._t:
            self.area += self.in_flight * (now - self._t)
        self._t = now

    def start(self) -> None:
        now = time.time()
        self._advance(now)
        if self.first_request is None:
            self.first_request = now
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def end(self) -> None:
        now = time.time()
        self._advance(now)
        self.in_flight -= 1
        self.last_response = now

    def as_json(self) -> dict:
        span = (self.last_response or 0) - (self.first_request or 0)
        return {"requests": self.requests, "first_request": self.first_request, "last_response": self.last_response,
                "mean_in_flight": self.area / span if span > 0 else 0.0, "peak_in_flight": self.peak}


def _prompt_text(body: dict) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content") or "") for m in body["messages"])
    prompt = body.get("prompt", "")
    return "\n".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)


def _answer(text: str) -> str:
    found = QUESTION.findall(text)
    if not found:
        return "I only add numbers."
    a, b = found[-1]
    return str(int(a) + int(b))


def make_app(latency_s: float) -> web.Application:
    stats = Stats()

    async def complete(request: web.Request, chat: bool) -> web.Response:
        stats.start()
        try:
            body = await request.json()
            text = _answer(_prompt_text(body))
            await asyncio.sleep(latency_s)
            usage = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
            model = body.get("model", "bench")
            if chat:
                out = {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}], "usage": usage}
            else:
                out = {"id": "cmpl-bench", "object": "text_completion", "created": int(time.time()), "model": model,
                       "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                       "usage": usage}
            return web.json_response(out)
        finally:
            stats.end()

    async def chat(request: web.Request) -> web.Response:
        return await complete(request, chat=True)

    async def text(request: web.Request) -> web.Response:
        return await complete(request, chat=False)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model", "owned_by": "bench"}]})

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(stats.as_json())

    async def reset(_: web.Request) -> web.Response:
        stats.__init__()  # type: ignore[misc]
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", text)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/_stats", get_stats)
    app.router.add_post("/_reset", reset)
    return app


async def serve(latency_s: float, port: int) -> None:
    runner = web.AppRunner(make_app(latency_s), access_log=None, handle_signals=True)
    await runner.setup()
    # A deep accept backlog: 64 connections opened at once must not wait on SYN retries.
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per completion")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    try:
        asyncio.run(serve(args.latency, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
