"""The harness: a scaffold, its tools and sandboxes, run over a task's instances.

``run_trajectories`` is the one hook the runner calls when ``harness.scaffold != single_turn``
for a ``generate`` task. Each instance's trajectory runs through the scaffold (at most
``harness.concurrency`` at once); the final response is cached under the usual response-cache
key (model identity, request, scaffold + harness policy, tools, sample index) and the trajectory
beside it, so a re-run calls no model and still records every step.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from engine.api import GenerateRequest, GenerateResponse, TrajectoryStep, stable_hash
from engine.config.schema import Experiment, HarnessConfig
from engine.harness.protocol import choose_protocol
from engine.harness.scaffolds import SCAFFOLDS, ModelCaller, ToolLoop, Trajectory
from engine.harness.tools import Tool, resolve_tools

DEFAULT_POOL = {"name": "local", "backend": "local", "provides": ["python", "bash"], "instances": 2}


def policy_signature(h: HarnessConfig) -> str:
    """The scaffold name plus a hash of everything in the harness that changes a trajectory.

    Goes into the response-cache key (whose `scaffold` slot it fills), so changing max_turns,
    limits, the protocol, tool options or the agent prompt never returns a stale trajectory.
    """
    if h.scaffold == "single_turn":
        return h.scaffold
    policy = {"max_turns": h.max_turns, "protocol": h.protocol, "tool_options": h.tool_options,
              "system_prompt": h.system_prompt, "max_total_tokens": h.max_total_tokens,
              "max_time_s": h.max_time_s, "turns_field": h.turns_field if h.scaffold == "multi_turn" else None,
              "sandboxes": h.sandboxes}  # where code runs can change what it outputs
    return f"{h.scaffold}:{stable_hash(policy)[:12]}"


class TrajectoryStore:
    """Trajectories beside the response cache (same SQLite file, own table)."""

    def __init__(self, path: str | Path | None):
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is None:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS trajectories (key TEXT PRIMARY KEY, steps TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, list[TrajectoryStep]]:
        if self._db is None or not keys:
            return {}
        out: dict[str, list[TrajectoryStep]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, steps FROM trajectories WHERE key IN ({marks})", chunk):
                    out[key] = [TrajectoryStep.model_validate(s) for s in json.loads(blob)]
        return out

    def put(self, key: str, steps: list[TrajectoryStep]) -> None:
        if self._db is None:
            return
        blob = json.dumps([s.model_dump(mode="json") for s in steps], default=str)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO trajectories VALUES (?, ?)", (key, blob))
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class BatchingProvider:
    """Gathers generate calls that arrive together (concurrent trajectories) into one batch.

    The hf provider serves a batch in one padded forward pass; trajectories calling one request
    at a time would otherwise run one by one. Requests are grouped by sampling parameters.
    """

    def __init__(self, provider: Any, max_batch: int, window_s: float = 0.02):
        self.provider = provider
        self.identity = provider.identity
        self.max_batch = max(1, max_batch)
        self.window_s = window_s
        self._pending: list[tuple[GenerateRequest, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self.calls = 0

    def __getattr__(self, name: str) -> Any:  # tokenizer etc. for protocol detection
        return getattr(self.provider, name)

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateResponse]:
        loop = asyncio.get_running_loop()
        futs = []
        for r in requests:
            fut = loop.create_future()
            self._pending.append((r, fut))
            futs.append(fut)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return list(await asyncio.gather(*futs))

    async def _flush(self) -> None:
        await asyncio.sleep(self.window_s)
        while self._pending:
            pending, self._pending = self._pending, []
            groups: dict[str, list[tuple[GenerateRequest, asyncio.Future]]] = defaultdict(list)
            for r, f in pending:
                groups[r.sampling.model_dump_json() + json.dumps(r.tools, sort_keys=True)].append((r, f))
            for group in groups.values():
                for i in range(0, len(group), self.max_batch):
                    chunk = group[i : i + self.max_batch]
                    self.calls += 1
                    try:
                        responses = await self.provider.generate([r for r, _ in chunk])
                    except Exception as err:  # noqa: BLE001 - each caller sees the error
                        for _, f in chunk:
                            if not f.done():
                                f.set_exception(err)
                        continue
                    for (_, f), resp in zip(chunk, responses, strict=True):
                        if not f.done():
                            f.set_result(resp)


def needs_router(h: HarnessConfig, tools: list[Tool]) -> bool:
    return bool(h.sandboxes) or any(t.requires - {"network"} for t in tools)


def build_router(h: HarnessConfig, tools: list[Tool], n_trajectories: int):
    """A SandboxRouter over the harness's pools (a default local pool when tools need one)."""
    if not needs_router(h, tools):
        return None
    from engine.sandbox import Demand, SandboxRouter, pools_from_config

    pools = pools_from_config(h.sandboxes or [DEFAULT_POOL])
    router = SandboxRouter(pools)
    demands = []
    for t in tools:
        if t.requires and router.route(list(t.requires)) is not None:
            demands.append(Demand(requires=list(t.requires), instances=n_trajectories, executions=h.max_turns))
    router.demands = tuple(demands)
    return router


class Harness:
    """A scaffold with its tools, protocol and sandboxes, bound to one provider."""

    def __init__(self, cfg: HarnessConfig, provider: Any, router: Any = None):
        self.cfg = cfg
        self.provider = provider
        self.tools = resolve_tools(cfg.tools)
        self.protocol = choose_protocol(cfg.protocol, provider)
        self.router = router
        if cfg.scaffold == "openai_agents":  # optional extra: imports the SDK only when chosen
            from engine.harness.openai_agents import OpenAIAgentsLoop

            cls: type[ToolLoop] = OpenAIAgentsLoop
        else:
            cls = SCAFFOLDS[cfg.scaffold]
        caller = ModelCaller(provider, cfg)
        if cls.__name__ == "SingleTurn":
            self.scaffold: ToolLoop = cls(caller, cfg)  # type: ignore[call-arg]
        else:
            self.scaffold = cls(caller, self.tools, cfg, self.protocol, router)

    async def run(self, request: GenerateRequest, instance: Any = None) -> Trajectory:
        return await self.scaffold.run(request, instance)


async def run_trajectories(task: Any, instances: list[Any], exp: Experiment, provider: Any, runner: Any):
    """(plan, outcomes, trajectories) for a generate task under a multi-step scaffold.

    ``plan`` is [(instance, sample index, WorkItem)] like the single-turn path; ``outcomes`` maps
    each key to an ``Outcome``; ``trajectories`` maps each key to its steps.
    """
    from tqdm import tqdm

    from engine.runner.cache import cache_key
    from engine.runner.schedule import Outcome, WorkItem

    h = exp.harness
    samples = task.config.generation.samples
    signature = policy_signature(h)
    plan = []
    for inst in instances:
        base = task.build_request(inst)
        for k in range(samples):
            req = base
            if samples > 1:
                req = base.model_copy(update={"sampling": base.sampling.model_copy(update={"seed": exp.seed + k})})
            plan.append((inst, k, WorkItem(key=cache_key(provider.identity, req, signature, h.tools, k), request=req)))

    store = TrajectoryStore(exp.cache.path if exp.cache.enabled else None)
    keys = list(dict.fromkeys(item.key for _, _, item in plan))
    cached = runner.cache.get_many(keys)
    trajectories: dict[str, list[TrajectoryStep]] = store.get_many(list(cached))
    outcomes: dict[str, Outcome] = {k: Outcome(response=v, cached=True) for k, v in cached.items()}
    pending = {item.key: (inst, item) for inst, _, item in plan if item.key not in cached}

    batching = BatchingProvider(provider, getattr(provider, "max_batch", 1)) if getattr(provider, "max_batch", 1) > 1 else provider
    tools = resolve_tools(h.tools)
    router = build_router(h, tools, len(pending)) if pending else None
    bar = tqdm(total=len(keys), initial=len(cached), desc=f"{h.name}", unit="traj", file=sys.stderr,
               disable=not exp.progress, dynamic_ncols=True, leave=False)
    sem = asyncio.Semaphore(max(1, h.concurrency))

    async def one(key: str, inst: Any, item: Any, harness: Harness) -> None:
        async with sem:
            t0 = time.monotonic()
            try:
                traj = await harness.run(item.request, inst)
            except Exception as err:  # noqa: BLE001 - a bug in one trajectory must not lose the run
                from engine.api import InstanceError

                outcomes[key] = Outcome(error=InstanceError(kind=type(err).__name__, message=str(err)[:1000], attempts=1))
                trajectories[key] = []
                bar.update(1)
                return
            latency = time.monotonic() - t0
            trajectories[key] = traj.steps
            if traj.response is None:
                outcomes[key] = Outcome(error=traj.error, latency_s=latency, attempts=1)
            else:
                outcomes[key] = Outcome(response=traj.response, latency_s=latency, attempts=1)
                runner.cache.put_many({key: traj.response})
                store.put(key, traj.steps)
            bar.update(1)

    try:
        if router is not None:
            async with router:
                harness = Harness(h, batching, router)
                await asyncio.gather(*(one(k, inst, item, harness) for k, (inst, item) in pending.items()))
        elif pending:
            harness = Harness(h, batching, None)
            await asyncio.gather(*(one(k, inst, item, harness) for k, (inst, item) in pending.items()))
    finally:
        bar.close()
        store.close()
    return plan, outcomes, trajectories
