"""A deterministic fake provider for the gateway and the runner core's `submit` (no real model), and a
stand-in for lm-eval (`fake_lm_eval`: a script given as `external.args.python`)."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

from engine.config.schema import HarnessConfig
from engine.runner.cache import ResultCache
from engine.runner.core import RunnerCore
from engine.types import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    ModelIdentity,
    ProviderError,
    TokenLogprobsRequest,
    TokenLogprobsResponse,
    TokenUsage,
)


def token_logprob(prev: int, tok: int) -> float:
    """A fixed 'model': log P(tok | prev) — any deterministic function will do."""
    return -((prev * 7 + tok * 3) % 11) / 4 - 0.1


class FakeProvider:
    def __init__(self, max_batch: int = 4, fail_first: int = 0, delay_s: float = 0.0):
        self.identity = ModelIdentity(name="fake-model", provider="fake")
        self.max_batch = max_batch
        self.model_dir = "/nonexistent/tokenizer"
        self.batches: list[int] = []  # sizes of the provider calls
        self.active = 0
        self.max_active = 0
        self.fail_first = fail_first
        self.delay_s = delay_s

    async def _call(self, n: int) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail_first > 0:
                self.fail_first -= 1
                raise ProviderError("overloaded", transient=True, kind="rate_limited")
            self.batches.append(n)
        finally:
            self.active -= 1

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateResponse]:
        await self._call(len(requests))
        return [GenerateResponse(text=f"echo: {r.render_text()[-20:]}", finish_reason="stop",
                                 usage=TokenUsage(prompt_tokens=3, completion_tokens=2)) for r in requests]

    async def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]:
        await self._call(len(requests))
        return [LoglikelihoodResponse(logprobs=tuple(-1.0 for _ in r.continuations),
                                      token_counts=tuple(1 for _ in r.continuations),
                                      is_greedy=tuple(False for _ in r.continuations)) for r in requests]

    async def token_logprobs(self, requests: list[TokenLogprobsRequest]) -> list[TokenLogprobsResponse]:
        await self._call(len(requests))
        out = []
        for r in requests:
            toks = list(r.tokens) if r.tokens is not None else [ord(c) % 50 for c in r.text or ""]
            best = [max(range(50), key=lambda t, p=p: token_logprob(p, t)) for p in toks]
            lps = [token_logprob(p, t) for p, t in zip(toks, toks[1:], strict=False)]
            out.append(TokenLogprobsResponse(
                tokens=tuple(toks), text=r.text if r.text is not None else " ".join(f"t{t}" for t in toks), token_texts=tuple(f" t{t}" for t in toks),
                logprobs=(None, *lps), top_texts=(None, *(f" t{b}" for b in best[:-1])),
                top_logprobs=(None, *(token_logprob(p, b) for p, b in zip(toks[:-1], best[:-1], strict=True))),
                next_token=best[-1], next_text=f" t{best[-1]}", next_logprob=token_logprob(toks[-1], best[-1]),
                usage=TokenUsage(prompt_tokens=len(toks), completion_tokens=1)))
        assert all(math.isfinite(x) for o in out for x in o.logprobs[1:])  # type: ignore[arg-type]
        return out

    async def aclose(self) -> None:
        return None


@pytest.fixture
def make_core(tmp_path):
    def make(provider: FakeProvider | None = None, concurrency: int = 4, cache: str | None = "cache.sqlite") -> RunnerCore:
        harness = HarnessConfig(concurrency=concurrency, retry_backoff_s=0.0, max_retries=2)
        return RunnerCore(provider or FakeProvider(), harness, ResultCache(tmp_path / cache if cache else None),
                          progress=False)

    return make


# Acts as `python -m lm_eval run ...`: reads --output_path and base_url, behaves as FAKE_LM_EVAL says.
FAKE = r'''#!{python}
import json, os, sys, time, urllib.request
argv = sys.argv[1:]
out = argv[argv.index("--output_path") + 1]
args = dict(kv.split("=", 1) for kv in argv[argv.index("--model_args") + 1].split(","))
rows = [json.loads(l) for l in open(os.path.join(os.path.dirname(out), "rows.jsonl"))]
mode = os.environ["FAKE_LM_EVAL"]
if mode == "crash":
    print("Traceback: something broke inside the benchmark", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    time.sleep(60)
if mode == "garbage":
    os.makedirs(out + "/m", exist_ok=True)
    open(out + "/m/results_1.json", "w").write("{not json")
    sys.exit(0)
os.makedirs(out + "/m", exist_ok=True)
name = "evalbench_hellaswag"
json.dump({"results": {name: {"alias": name, "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": float("nan") if mode == "aggregate-nan" else 0.25}},
           "n-samples": {name: {"original": len(rows), "effective": len(rows)}}}, open(out + "/m/results_1.json", "w"))
if mode in ("aggregate", "aggregate-nan"):
    sys.exit(0)
# Defective outputs (modes): every question twice, the last two missing, ids that are not the task's,
# a NaN score, a per-sample score of 5 on a 0/1 metric.
written = [*rows, *rows] if mode == "duplicate" else rows[:-2] if mode == "missing-2" else rows
with open(out + f"/m/samples_{name}_1.jsonl", "w") as f:
    for i, row in enumerate(written):
        i = i % len(rows)
        if mode == "foreign-ids":
            row = {**row, "id": f"other-{row['id']}"}
        if mode == f"kill-engine-after:{i}":  # the engine (our parent) dies halfway, as under a SIGKILL
            os.kill(os.getppid(), 9)
            sys.exit(0)
        args_ = {}
        for j, ending in enumerate(row["endings"][:2]):
            prompt = f"Q{i}: " + row["ctx"][:30]
            body = {"model": "m", "prompt": prompt + " " + ending, "echo": True, "logprobs": 1, "max_tokens": 1}
            req = urllib.request.Request(args["base_url"], data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=30).read()
            args_[f"gen_args_{j}"] = {"arg_0": prompt, "arg_1": " " + ending}
        f.write(json.dumps({"doc_id": i, "doc": {**row, "choices": row["endings"][:2]}, "target": "0",
                            "arguments": args_, "resps": [], "filtered_resps": [["-1.5", "False"], ["-2.5", "False"]],
                            "metrics": ["acc", "acc_norm"], "acc": float(i % 2),
                            "acc_norm": {"nan": float("nan"), "score-5": 5.0}.get(mode, 1.0)}) + "\n")
'''


@pytest.fixture
def fake_lm_eval(tmp_path: Path) -> Path:
    script = tmp_path / "fake-python"
    script.write_text(FAKE.replace("{python}", sys.executable))
    script.chmod(0o755)
    return script
