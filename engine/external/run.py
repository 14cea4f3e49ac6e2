"""Run an external eval: the benchmark's own loop in a subprocess against the model gateway, its
per-sample output mapped to instance records (docs/architecture.md, "External evals").

The run record's scores are computed by our statistics from the benchmark's per-sample scores (so
`engine.compare` works as for native runs); a benchmark without per-sample scores is recorded with
its own aggregate only, marked `aggregate_only` (no SE). A crash, a timeout or unreadable output is
a failed run whose record holds the benchmark's stderr tail.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.config.compose import compose_task
from engine.config.errors import ConfigError
from engine.config.schema import Experiment, ExternalConfig
from engine.config.suites import TaskRun
from engine.external.base import (
    ExternalItem,
    ExternalOutput,
    ExternalSample,
    OutputError,
    Wrapper,
    WrapperContext,
    is_sandboxed,
    wrapper_for,
)
from engine.external.gateway import ModelGateway, ServedRequest
from engine.external.images import ensure_image, image_exists, image_tag
from engine.external.inspect_wrapper import InspectWrapper
from engine.external.lm_eval import LmEvalWrapper
from engine.external.sandboxed import (
    GATEWAY_DIR,
    PROXY_PORT,
    SOCKET_NAME,
    WORK,
    ExternalContainer,
    container_limits,
    prepare_dirs,
    run_in_container,
)
from engine.external.validate import check_output, missing_records
from engine.models import resolve_model_dir, with_tool_model
from engine.record.atomic import atomic_write_lines
from engine.runner.core import RunnerCore
from engine.runner.task_run import TaskResult, prepare, run_dir_for
from engine.tasks import Instance, build_task
from engine.types import InstanceRecord, RunCounts, ScoreSummary, TrajectoryStep, stable_hash

WRAPPERS: dict[str, Wrapper] = {"lm_eval": LmEvalWrapper(), "inspect": InspectWrapper()}
INNER_BASE_URL = f"http://127.0.0.1:{PROXY_PORT}/v1"  # the gateway as a sandboxed benchmark reaches it
STDERR_TAIL = 4000  # characters of the benchmark's stderr kept in a failed run's record


def external_of(task_run: TaskRun) -> ExternalConfig:
    assert task_run.task.external is not None
    return task_run.task.external


def task_hash_of(task_run: TaskRun) -> str:
    """`compare_as`: the native task's hash, so compare pairs the runs; else a hash of the external task."""
    ext = external_of(task_run)
    if ext.compare_as:
        return build_task(compose_task(ext.compare_as)).task_hash
    return stable_hash(task_run.task.model_dump(mode="json", by_alias=True, exclude={"variants"}))[:16]


def _context(task_run: TaskRun, exp: Experiment, core: RunnerCore | None, base_url: str, workdir: Path,
             instances: list[Instance], inner_workdir: str | None = None) -> WrapperContext:
    model_dir = getattr(core.provider, "model_dir", None) if core is not None else None
    if model_dir is None and exp.model.provider == "hf":  # inspect=true: no provider built
        model_dir = resolve_model_dir(with_tool_model(exp.model))
    items = [ExternalItem(id=i.id, query=i.query, choices=list(i.choices) if i.choices is not None else None,
                          gold=i.gold, cluster=i.cluster) for i in instances]
    return WrapperContext(task=task_run.task, external=external_of(task_run), exp=exp, base_url=base_url,
                          model_name=exp.model.name, model_dir=None if model_dir is None else str(model_dir),
                          rows=[i.row for i in instances], workdir=workdir, items=items, inner_workdir=inner_workdir)


def external_command(task_run: TaskRun, exp: Experiment) -> str:
    """`inspect=true`: the command that would run (the gateway's port is chosen at run time)."""
    ext = external_of(task_run)
    wrapper = wrapper_for(ext.wrapper, WRAPPERS)
    workdir = Path(tempfile.mkdtemp(prefix="evalbench-external-inspect-"))
    _, instances = prepare(task_run, exp)
    head = (f"=== {task_run.spec}  (external eval, wrapper {ext.wrapper}, {len(instances)} instances, "
            f"task hash {task_hash_of(task_run)})\n[files] {workdir}")
    if is_sandboxed(wrapper):
        argv, env = wrapper.command(_context(task_run, exp, None, INNER_BASE_URL, workdir, instances, WORK))
        try:
            tag = image_tag(wrapper.recipe())
            image = f"{tag} ({'built' if image_exists(tag) else 'not built yet: built on the first run'})"
        except ConfigError as err:  # docker down or no base image: show why, the command still prints
            image = f"unknown: {err}"
        limits = container_limits(ext.args)
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        return (f"{head}\n[image] {image}\n"
                f"[container] network none (the gateway only, through {GATEWAY_DIR}/{SOCKET_NAME} relayed to "
                f"127.0.0.1:{PROXY_PORT}), {limits.cpus} CPUs, {limits.memory_mb} MB, {limits.max_procs} pids, "
                f"{workdir} mounted at {WORK}\n[command in the container]\n{envs} {shlex.join(argv)}")
    argv, env = wrapper.command(_context(task_run, exp, None, "http://127.0.0.1:<port>/v1", workdir, instances))
    envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"{head}\n[command]\n{envs} {shlex.join(argv)}"


async def _run_process(argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> tuple[int | None, str]:
    """(exit code, None on timeout; stderr tail). Its own process group, killed whole on any exit."""
    out_path, err_path = cwd / "stdout.log", cwd / "stderr.log"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=err, cwd=cwd, env={**os.environ, **env},
                                                    start_new_session=True)
        try:
            code: int | None = await asyncio.wait_for(proc.wait(), timeout=timeout_s)
        except asyncio.TimeoutError:
            code = None
        finally:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await proc.wait()
    return code, err_path.read_text(errors="replace")[-STDERR_TAIL:]


async def _run_container(container: ExternalContainer, workdir: Path, timeout_s: float) -> tuple[int | None, str]:
    """As `_run_process`, in the wrapper's container; its output is kept beside the results."""
    code, out, err = await run_in_container(container, timeout_s)
    (workdir / "stdout.log").write_bytes(out)
    (workdir / "stderr.log").write_bytes(err)
    return code, err.decode(errors="replace")[-STDERR_TAIL:]


def _norm(text: str) -> str:
    return "".join(text.split())


def _steps(served: list[ServedRequest]) -> list[TrajectoryStep]:
    return [TrajectoryStep(type="model", started=s.started, duration_s=s.latency_s, tokens=s.prompt_tokens + s.completion_tokens,
                           content={"endpoint": s.endpoint, "kind": s.kind, "cache_key": s.key, "cached": s.cached,
                                    "attempts": s.attempts, "error": s.error, "gateway_index": s.index})
            for s in served]


def map_samples(output_samples: list[ExternalSample], served: list[ServedRequest], task_hash: str, spec: str,
                clusters: dict[str, str | None]) -> tuple[list[InstanceRecord], dict[int, str]]:
    """Instance records with their gateway requests as trajectory steps; the instance of each claimed
    request (by gateway index: the others stay on the run, in gateway.jsonl)."""
    by_text: dict[str, list[ServedRequest]] = {}
    for s in served:
        if s.text is not None:
            by_text.setdefault(s.text, []).append(s)
            by_text.setdefault(_norm(s.text), []).append(s)
    claimed: dict[int, str] = {}
    records = []
    for smp in output_samples:
        mine: list[ServedRequest] = []
        for text in smp.request_texts:
            found = by_text.get(text) or by_text.get(_norm(text)) or []
            mine += [s for s in found if s.index not in claimed and s not in mine]
        claimed.update({s.index: smp.instance_id for s in mine})
        records.append(InstanceRecord(
            task_hash=task_hash, task_spec=spec, instance_id=smp.instance_id, prompt_text=smp.prompt, gold=smp.gold,
            choices=smp.choices, cluster=clusters.get(smp.instance_id), output_text=smp.response, logprobs=smp.logprobs,
            extracted_answer=smp.extracted, scores=smp.scores, latency_s=sum(s.latency_s for s in mine),
            prompt_tokens=sum(s.prompt_tokens for s in mine), completion_tokens=sum(s.completion_tokens for s in mine),
            cached=bool(mine) and all(s.cached for s in mine), attempts=sum(s.attempts for s in mine),
            trajectory=_steps(sorted(mine, key=lambda s: s.index))))
    return records, claimed


def _aggregate_only(output: ExternalOutput) -> dict[str, ScoreSummary]:
    # No per-sample scores, so no SE: the interval collapses to the value; `aggregate_only` says so.
    return {m: ScoreSummary(value=v, n=output.n, stderr=0.0, ci_low=v, ci_high=v, mde=0.0)
            for m, v in output.aggregate.items()}


def check_external(task_run: TaskRun, exp: Experiment | None = None) -> None:
    """Before any compute: the wrapper exists, its tool is installed, and the provider can serve what
    the benchmark asks (ConfigError, exit 2)."""
    ext = external_of(task_run)
    wrapper_for(ext.wrapper, WRAPPERS).check_installed(ext)
    if exp is not None and exp.model.provider != "hf" and task_run.task.formulation != "generate":
        raise ConfigError(
            f"External eval {task_run.spec} scores choices by prompt loglikelihood (formulation "
            f"{task_run.task.formulation}), which the model gateway serves exactly only for provider hf (prompt-token "
            f"logprobs from the weights), and model '{exp.model.name}' is served by {exp.model.provider}. Fix: "
            "evaluate the checkpoint in-process (`model=smollm2 model.path=...`), or run a generation benchmark."
        )


async def run_external(task_run: TaskRun, exp: Experiment, core: RunnerCore) -> TaskResult:
    start = time.monotonic()
    ext = external_of(task_run)
    wrapper = wrapper_for(ext.wrapper, WRAPPERS)
    wrapper.check_installed(ext)
    task_hash = task_hash_of(task_run)
    _, instances = prepare(task_run, exp)
    clusters = {i.id: i.cluster for i in instances}
    calls_before = core.model_calls
    extra: dict[str, Any] = {"wrapper": ext.wrapper, "args": ext.args, "compare_as": ext.compare_as}

    def result(status: str, records: list[InstanceRecord], scores: dict[str, ScoreSummary] | None = None) -> TaskResult:
        errored = sum(1 for r in records if r.error is not None)
        return TaskResult(spec=task_run.spec, task_hash=task_hash, instances=records,
                          counts=RunCounts(n=len(records), scored=len(records) - errored, errored=errored),
                          duration_s=time.monotonic() - start, status=status,
                          prompt_tokens=sum(r.prompt_tokens for r in records),
                          completion_tokens=sum(r.completion_tokens for r in records), scores=scores, extra=extra)

    with tempfile.TemporaryDirectory(prefix="evalbench-external-") as tmp:
        if is_sandboxed(wrapper):
            workdir, gateway_dir = prepare_dirs(Path(tmp))
            image = ensure_image(wrapper.recipe())
            limits = container_limits(ext.args)
            extra["image"] = image
        else:
            workdir, gateway_dir = Path(tmp), None
        unix_path = None if gateway_dir is None else str(gateway_dir / SOCKET_NAME)
        async with ModelGateway(core, unix_path=unix_path) as gw:
            if gateway_dir is None:
                ctx = _context(task_run, exp, core, gw.base_url, workdir, instances)
            else:
                ctx = _context(task_run, exp, core, INNER_BASE_URL, workdir, instances, WORK)
            argv, env = wrapper.command(ctx)
            extra["command"] = shlex.join(argv)
            where = (f"on the host against the gateway {gw.base_url}" if gateway_dir is None else
                     f"in a container of {extra['image']} (no network) against the gateway's socket {unix_path}")
            print(f"[evalbench] {task_run.spec}: {ext.wrapper} is running {where}", file=sys.stderr)
            if gateway_dir is None:
                code, stderr_tail = await _run_process(argv, env, workdir, ext.timeout_s)
            else:
                code, stderr_tail = await _run_container(
                    ExternalContainer(image, argv, env, workdir, gateway_dir, limits, ext.wrapper), workdir, ext.timeout_s)
        served = gw.served
        extra.update(returncode=code, gateway_requests=len(served), cached_requests=sum(s.cached for s in served),
                     model_calls=core.model_calls - calls_before)
        if code != 0:
            _write_gateway_log(exp, task_run, served, {})
            why = f"timed out after {ext.timeout_s} s" if code is None else f"exited with code {code}"
            extra.update(error=f"{ext.wrapper} {why}", stderr_tail=stderr_tail)
            _say_failed(task_run.spec, extra["error"], stderr_tail)
            return result("failed", [])
        try:
            output = wrapper.parse(ctx)
            missing = check_output(output, [i.id for i in instances])  # docs/architecture.md, "Boundaries"
        except OutputError as err:
            _write_gateway_log(exp, task_run, served, {})
            extra.update(error=f"{ext.wrapper}'s output cannot be read: {err}", stderr_tail=stderr_tail)
            _say_failed(task_run.spec, extra["error"], stderr_tail)
            return result("failed", [])
    extra["benchmark_aggregate"] = output.aggregate
    if output.samples is None:
        _write_gateway_log(exp, task_run, served, {})
        extra["aggregate_only"] = True
        return result("finished", [], _aggregate_only(output))
    records, owner = map_samples(output.samples, served, task_hash, task_run.spec, clusters)
    order = {i.id: n for n, i in enumerate(instances)}
    records = sorted([*records, *missing_records(missing, task_hash, task_run.spec, ext.wrapper, clusters)],
                     key=lambda r: order[r.instance_id])
    _write_gateway_log(exp, task_run, served, owner)
    extra.update(aggregate_only=False, unmatched_requests=len(served) - len(owner), missing_from_output=len(missing))
    scored = sum(r.error is None for r in records)
    return result("failed" if not scored else "finished" if scored == len(records) else "partial", records)


def _say_failed(spec: str, error: str, stderr_tail: str) -> None:
    """The failed run's reason on the terminal too (the record keeps it as config.external_run)."""
    lines = "\n".join("    " + ln[:300] for ln in stderr_tail.strip().splitlines()[-15:])
    print(f"[evalbench] {spec}: {error}; the end of its stderr:\n{lines}", file=sys.stderr)


def _write_gateway_log(exp: Experiment, task_run: TaskRun, served: list[ServedRequest], owner: dict[int, str]) -> None:
    """Every request the gateway served, with its cache key and the instance it belongs to (None: the
    run's own), in the run folder as gateway.jsonl; written before the record, so MLflow gets it too."""
    run_dir = run_dir_for(exp, task_run.spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_lines(run_dir / "gateway.jsonl",
                       (json.dumps({**s.model_dump(mode="json"), "instance_id": owner.get(s.index)}) for s in served))
