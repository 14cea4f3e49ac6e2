"""`python -m engine.compare --series ... --log-mlflow`: a series' statistics as an MLflow run.

One run of kind `series` (docs/architecture.md, "Run kinds") in the experiment of the series' runs,
nested under their sweep's parent run when they all come from one sweep (so that the MLflow UI
shows it inside the sweep, beside the checkpoints it describes). Its metrics, per task spec T:
- `T.score` and `T.delta_vs_first` with MLflow's step = the checkpoint's training step, so that
  the run's charts plot the score against training step;
- `T.noise` (σ/mean over the last checkpoints), `T.noise_std`, `T.noise_checkpoints`, `T.signal`,
  `T.dispersion`, `T.snr`, `T.flip_rate` (the mean per step) and `T.flip_rate_step` (at the later
  checkpoint's step), `T.checkpoints_within_noise` (points flagged "within checkpoint noise");
the JSON report and the table as artifacts (`series/series.json`, `series/series.txt`); params: the
metric and `noise_checkpoints`. A non-finite figure (an SNR of a series that never moved) is left
out of the metrics (MLflow refuses NaN) and kept in the JSON. Logging the same series again (same
runs, metric, noise window and signal models: tag `evalbench.series_key`) finds the earlier run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from engine.compare.loading import CompareError, RunData
from engine.compare.models import SeriesReport
from engine.config.schema import TrackingConfig
from engine.record import store
from engine.record.lifecycle import STATUS_TAG
from engine.record.mlflow_writer import KIND_TAG, metric_name, run_kind, start_mlflow_run
from engine.types import SERIES_RUN, SUITE_RUN, SWEEP_RUN

SERIES_KEY_TAG = "evalbench.series_key"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by


def series_key(series: SeriesReport) -> str:
    """What the series was computed from: each point's run, each task's metric and signal models, the
    noise window. Equal keys: the same figures."""
    parts = [(t.task_hash, t.metric, sorted(t.signal_models), [(p.step, p.mlflow_run_id or p.run_dir) for p in t.points])
             for t in series.tasks]
    blob = json.dumps([series.noise_checkpoints, sorted(parts)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def series_metrics(series: SeriesReport) -> list[tuple[str, float, int]]:
    """(name, value, step) of every finite figure of the series."""
    out: list[tuple[str, float, int]] = []
    for t in series.tasks:
        base = metric_name(t.task_spec)
        for p in t.points:
            out.append((f"{base}.score", p.value, p.step))
            if p.delta_vs_base is not None:
                out.append((f"{base}.delta_vs_first", p.delta_vs_base, p.step))
        out.append((f"{base}.checkpoints_within_noise", float(sum(bool(p.noise_exceeds_delta) for p in t.points)), 0))
        if t.noise is not None:
            out += [(f"{base}.noise", t.noise.relative, 0), (f"{base}.noise_std", t.noise.std, 0),
                    (f"{base}.noise_checkpoints", float(t.noise.n_checkpoints), 0)]
        if t.signal is not None:
            out += [(f"{base}.signal", t.signal.signal, 0), (f"{base}.dispersion", t.signal.dispersion, 0),
                    (f"{base}.snr", t.signal.snr, 0)]
        if t.flips is not None:
            out.append((f"{base}.flip_rate", t.flips.mean, 0))
            out += [(f"{base}.flip_rate_step", rate, t.points[i + 1].step) for i, rate in enumerate(t.flips.per_step)]
    return [(name, float(value), step) for name, value, step in out if math.isfinite(value)]


def _sweep_parent(client: Any, run_id: str) -> str | None:
    """The sweep parent a task run is nested under (through its suite parent), or None."""
    tags = store.retry(partial(client.get_run, run_id), "read a series run").data.tags
    parent = tags.get(PARENT_TAG)
    if parent is None:
        return None
    parent_tags = store.retry(partial(client.get_run, parent), "read a parent run").data.tags
    if run_kind(parent_tags) == SUITE_RUN:
        return _sweep_parent(client, parent)
    return parent if run_kind(parent_tags) == SWEEP_RUN else None


def _experiment(runs: Sequence[RunData], explicit: str | None) -> str:
    if explicit:
        return explicit
    names = sorted({r.info.experiment_name for r in runs})
    if len(names) != 1:
        raise CompareError(f"--log-mlflow: the series' runs belong to {len(names)} experiments ({', '.join(names)}); "
                           "name the one to log the series into with --experiment NAME.")
    return names[0]


def log_series(series: SeriesReport, runs: Sequence[RunData], table: str, tracking_uri: str,
               experiment: str | None = None) -> tuple[str, bool]:
    """Log the series as a `series` run; returns (its MLflow run id, whether it was created now)."""
    from mlflow.entities import Metric, Param, RunTag  # heavy; only with --log-mlflow

    name = _experiment(runs, experiment)
    client = store.client(tracking_uri)
    exp_id = store.get_or_create_experiment(client, name)
    key = series_key(series)
    found = store.retry(partial(client.search_runs, [exp_id], f"tags.`{SERIES_KEY_TAG}` = '{key}'"), "find series")
    if found:
        return str(found[0].info.run_id), False
    ids = [p.mlflow_run_id for t in series.tasks for p in t.points if p.mlflow_run_id]
    parents = {_sweep_parent(client, i) for i in ids}
    tags = {KIND_TAG: SERIES_RUN, "evalbench.series_tasks": ", ".join(t.task_spec for t in series.tasks)[:5000]}
    if len(parents) == 1 and None not in parents and len(ids) == sum(len(t.points) for t in series.tasks):
        tags[PARENT_TAG] = str(parents.pop())
    steps = sorted({p.step for t in series.tasks for p in t.points})
    run_name = f"series {', '.join(t.task_spec for t in series.tasks)[:80]} ({len(steps)} checkpoints)"
    run_id = start_mlflow_run(TrackingConfig(tracking_uri=tracking_uri), name, run_name, tags)
    ts = int(time.time() * 1000)
    metrics = [Metric(n, v, ts, step) for n, v, step in series_metrics(series)]
    params = [Param("series.noise_checkpoints", str(series.noise_checkpoints))]
    params += [Param(f"series.metric.{metric_name(t.task_spec)}", t.metric) for t in series.tasks]
    params += [Param(f"series.signal_models.{metric_name(t.task_spec)}", ", ".join(t.signal_models)[:500])
               for t in series.tasks if t.signal_models]
    for start in range(0, max(len(metrics), len(params)), 100):  # log_batch: at most 100 params per call
        store.retry(partial(client.log_batch, run_id, metrics=metrics[start:start + 100],
                            params=params[start:start + 100], synchronous=True), "log the series")
    store.retry(partial(client.log_text, run_id, series.model_dump_json(indent=2), "series/series.json"),
                "log the series report")
    store.retry(partial(client.log_text, run_id, table + "\n", "series/series.txt"), "log the series table")
    # the key last: a run that stopped half-logged is never taken for the series
    store.retry(partial(client.log_batch, run_id, tags=[RunTag(STATUS_TAG, "finished"), RunTag(SERIES_KEY_TAG, key)],
                        synchronous=True), "tag the series run")
    store.retry(partial(client.set_terminated, run_id, status="FINISHED"), "finish the series run")
    return run_id, True
