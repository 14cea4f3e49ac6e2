"""Built-in tools: python_exec, bash, search, fetch_page, submit.

Options come from ``harness.tool_options.<tool>``; code runs through the sandbox router.
"""

from __future__ import annotations

import asyncio
import os

from engine.harness.search_index import CORPUS_SCHEME, KEY_ENV, LocalIndex, choose_backend, http_search
from engine.harness.tools import ToolContext, ToolFailure, ToolResult, tool


def _exec_summary(result, max_chars: int) -> str:
    parts = []
    if result.stdout:
        parts.append(f"stdout:\n{result.stdout[:max_chars]}")
    if result.stderr:
        parts.append(f"stderr:\n{result.stderr[-max_chars:]}")
    status = f"exit code {result.exit_code}" if result.ok or result.reason is None else result.reason
    parts.append(f"[{status}]")
    return "\n".join(parts)


@tool(requires=["python"])
async def python_exec(code: str, ctx: ToolContext) -> ToolResult:
    """Run a Python 3 program in a sandbox and return its stdout, stderr and exit status.

    Args:
        code: the complete program; print() whatever you want to see.
    """
    timeout = ctx.options.get("timeout_s")
    result = await ctx.exec(["python"], ["python3", "main.py"], files={"main.py": code}, timeout_s=timeout)
    return ToolResult(content=_exec_summary(result, int(ctx.options.get("max_chars", 2000))), ok=result.ok,
                      error=None if result.ok else "nonzero_exit", data={"exit_code": result.exit_code})


@tool(requires=["bash"])
async def bash(command: str, ctx: ToolContext) -> ToolResult:
    """Run a bash command in a sandbox (fresh empty work dir) and return its output.

    Args:
        command: the shell command line.
    """
    timeout = ctx.options.get("timeout_s")
    result = await ctx.exec(["bash"], ["bash", "-c", command], timeout_s=timeout)
    return ToolResult(content=_exec_summary(result, int(ctx.options.get("max_chars", 2000))), ok=result.ok,
                      error=None if result.ok else "nonzero_exit", data={"exit_code": result.exit_code})


@tool
async def search(query: str, ctx: ToolContext) -> ToolResult:
    """Search for documents relevant to a query; returns titles, addresses and snippets.

    Args:
        query: a few keywords describing what to find.
    """
    opts = ctx.options
    k = int(opts.get("k", 3))
    backend = choose_backend(opts)
    if backend == "local":
        corpus = opts.get("corpus")
        if not corpus:
            raise ToolFailure("config", "search has no corpus: set harness.tool_options.search.corpus")
        index = await asyncio.to_thread(LocalIndex.for_corpus, corpus)
        hits = await asyncio.to_thread(index.search, query, k, int(opts.get("snippet_tokens", 24)))
    else:
        env = opts.get("api_key_env") or KEY_ENV.get(backend, "")
        key = os.environ.get(env)
        if not key:
            raise ToolFailure("config", f"search backend {backend} needs the {env} environment variable")
        hits = await asyncio.to_thread(http_search, backend, query, k, key)
    if not hits:
        return ToolResult(content=f"No results for {query!r}.", data={"backend": backend, "hits": []})
    lines = [f"[{i + 1}] {h.title} ({h.url})\n{h.snippet}" for i, h in enumerate(hits)]
    return ToolResult(content="\n\n".join(lines),
                      data={"backend": backend, "hits": [h.model_dump() for h in hits]})


_FETCH_PROGRAM = r"""
import html, re, sys, urllib.request
url, limit = sys.argv[1], int(sys.argv[2])
req = urllib.request.Request(url, headers={"User-Agent": "evalbench-fetch/0.1"})
with urllib.request.urlopen(req, timeout=15) as r:
    raw = r.read(2_000_000).decode(r.headers.get_content_charset() or "utf-8", "replace")
raw = re.sub(r"(?is)<(script|style|noscript)[^>]*>.*?</\1>", " ", raw)
text = html.unescape(re.sub(r"(?s)<[^>]+>", " ", raw))
print(re.sub(r"\s+", " ", text).strip()[:limit])
"""


@tool(requires=["network"])
async def fetch_page(url: str, ctx: ToolContext) -> ToolResult:
    """Fetch a page and return its text. Local corpus documents (corpus://...) need no network.

    Args:
        url: the address, as returned by search.
    """
    max_chars = int(ctx.options.get("max_chars", 3000))
    if url.startswith(CORPUS_SCHEME):
        corpus = ctx.options.get("corpus")
        if not corpus:
            raise ToolFailure("config", "fetch_page has no corpus for corpus:// addresses: set "
                              "harness.tool_options.fetch_page.corpus")
        index = await asyncio.to_thread(LocalIndex.for_corpus, corpus)
        doc = index.get(url)
        if doc is None:
            return ToolResult(ok=False, error="not_found", content=f"error: no document {url!r} in the corpus.")
        return ToolResult(content=doc["text"][:max_chars], data={"id": doc["id"]})
    if not url.startswith(("http://", "https://")):
        return ToolResult(ok=False, error="invalid_arguments",
                          content=f"error: {url!r} is neither an http(s) address nor a corpus:// document.")
    if not ctx.granted(["network", "python"]):
        raise ToolFailure("capability", "fetch_page needs the `network` capability for web pages, and no "
                          "sandbox pool of this harness grants it")
    result = await ctx.exec(["network", "python"], ["python3", "fetch.py", url, str(max_chars)],
                            files={"fetch.py": _FETCH_PROGRAM})
    if not result.ok:
        return ToolResult(ok=False, error="fetch_failed", content=f"error: could not fetch {url}: {result.reason}\n"
                          f"{result.stderr[-500:]}")
    return ToolResult(content=result.stdout.strip()[:max_chars])


@tool
def submit(answer: str) -> ToolResult:
    """Submit your final answer; this ends the task.

    Args:
        answer: the final answer, as short as possible.
    """
    return ToolResult(content=answer, final=True)


__all__ = ["python_exec", "bash", "search", "fetch_page", "submit"]
