"""`python -m engine.compare A B` and `python -m engine.compare --series RUN...`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from engine.compare.loading import CompareError, RunData
from engine.compare.models import SeriesReport
from engine.compare.paired import Comparison
from engine.compare.pairwise import compare_sides
from engine.compare.report import sequential_csv, sequential_table, series_csv, series_table, to_csv, to_table
from engine.compare.resolve import resolve, resolve_experiment, tracking_uri_of
from engine.compare.sequential import sequential_report
from engine.compare.series import build_series
from engine.compare.series_mlflow import log_series
from engine.compare.server import ViewerState, make_server, server_url
from engine.record.store import StoreError
from engine.stats import NOISE_CHECKPOINTS

EPILOG = """\
A and B each name runs: a run folder, a Hydra job dir holding several run folders (a suite), an MLflow
run id, or a selector such as model.checkpoint=step100, model=NAME, task=mmlu:mc,
tag.evalbench.checkpoint_step=100 or param.model.path=ckpt/step20 (terms joined with ','), matched
within --experiment in the MLflow store (or among the run folders under --runs-root).
Δ = A − B: put the new checkpoint first.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.compare", description="Paired comparison of two evaluation runs, or a checkpoint series.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN", help="A B (compare), or the runs of a --series")
    p.add_argument("--series", action="store_true", help="chart each task's score against training step")
    p.add_argument("--experiment", help="MLflow experiment name for selectors / the series")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)")
    p.add_argument("--runs-root", type=Path, help="match selectors against run folders below this dir instead of MLflow")
    p.add_argument("--task", help="series: only this task spec")
    p.add_argument("--metric", help="metric to compare (default: each task's primary metric)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--serve", action="store_true", help="open the web viewer on 127.0.0.1")
    p.add_argument("--port", type=int, default=8780, help="viewer port (0: any free port)")
    p.add_argument("--adjust", choices=("holm", "bh", "none"), default="holm",
                   help="adjust the task p-values of one comparison: Holm (default), Benjamini-Hochberg, none")
    p.add_argument("--sequential", action="store_true",
                   help="anytime-valid: read each task's paired questions in a seeded random order, stop when decided")
    p.add_argument("--alpha", type=float, default=0.05, help="--sequential: error level (default 0.05)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="--sequential: also stop when |Δ| < THRESHOLD is shown (default 0: only a direction)")
    p.add_argument("--seed", type=int, default=0, help="--sequential: seed of the question order")
    p.add_argument("--noise-checkpoints", type=int, default=NOISE_CHECKPOINTS,
                   help=f"series: noise over the last N checkpoints (default {NOISE_CHECKPOINTS}; all when fewer)")
    p.add_argument("--signal-runs", action="append", default=[], metavar="RUN",
                   help="series: runs of another model (repeatable); signal = dispersion of the models' final scores")
    p.add_argument("--log-mlflow", action="store_true",
                   help="series: also log noise, SNR, flip rates and the score by step as an MLflow run of kind "
                        "'series' (nested under the runs' sweep parent)")
    return p


def _load(spec: str, args: argparse.Namespace) -> list[RunData]:
    return resolve(spec, experiment=args.experiment, tracking_uri=args.tracking_uri, runs_root=args.runs_root)


def run(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    t0 = time.perf_counter()
    if args.series:
        if args.runs:
            runs = [r for spec in args.runs for r in _load(spec, args)]
        elif args.experiment:
            runs = resolve_experiment(args.experiment, tracking_uri=args.tracking_uri, runs_root=args.runs_root)
        else:
            raise CompareError("--series needs runs (run folders, a multirun dir, selectors) or --experiment NAME.")
        if args.noise_checkpoints < 2:
            raise CompareError(f"--noise-checkpoints must be at least 2 (got {args.noise_checkpoints}): noise is the "
                               "spread of the last N checkpoint scores.")
        others = [r for spec in args.signal_runs for r in _load(spec, args)]
        series = build_series(runs, metric=args.metric, task=args.task, noise_checkpoints=args.noise_checkpoints,
                              signal_runs=others)
        out = {"table": series_table, "csv": series_csv, "json": lambda s: s.model_dump_json(indent=2)}[args.format](series)
        print(out)
        if args.log_mlflow:
            _log_series(series, runs + others, args)
        if args.serve:
            _serve(None, series, args.port)
        return 0
    if args.log_mlflow:
        raise CompareError("--log-mlflow logs a series' statistics: use it with --series.")
    if len(args.runs) != 2:
        raise CompareError(f"Compare needs exactly two runs, A and B (got {len(args.runs)}); for many checkpoints use --series.")
    a_spec, b_spec = args.runs
    comparison = compare_sides(a_spec, b_spec, experiment=args.experiment, tracking_uri=args.tracking_uri,
                               runs_root=args.runs_root, metric=args.metric, adjust=args.adjust)
    t_load = time.perf_counter() - t0 - comparison.report.timings_s.get("compare", 0.0)
    if args.sequential:
        if not 0 < args.alpha < 1 or args.threshold < 0:
            raise CompareError(f"--alpha must lie in (0, 1) and --threshold be ≥ 0 (got {args.alpha}, {args.threshold}).")
        seq = sequential_report(comparison, alpha=args.alpha, threshold=args.threshold, seed=args.seed)
        print({"json": lambda r: r.model_dump_json(indent=2), "csv": sequential_csv, "table": sequential_table}[args.format](seq),
              end="" if args.format == "csv" else "\n")
        return 0
    report = comparison.report.model_copy(update={"timings_s": {**comparison.report.timings_s, "load": t_load}})
    if args.format == "json":
        print(report.model_dump_json(indent=2))
    elif args.format == "csv":
        print(to_csv(report), end="")
    else:
        print(to_table(report))
    if args.serve:
        _serve(comparison, None, args.port)
    return 0


def _log_series(series: SeriesReport, runs: list[RunData], args: argparse.Namespace) -> None:
    uri = tracking_uri_of(args.tracking_uri)
    try:
        run_id, created = log_series(series, runs, series_table(series), uri, args.experiment)
    except StoreError as e:
        raise CompareError(f"--log-mlflow: the MLflow store {uri} did not take the series ({e}); the figures "
                           "above are complete: re-run the same command when the store is back.") from e
    what = "logged as" if created else "already logged as"
    print(f"MLflow: the series statistics are {what} run {run_id} (kind series) in {uri}", file=sys.stderr)


def _serve(comparison: Comparison | None, series: SeriesReport | None, port: int) -> None:
    try:
        server = make_server(ViewerState(comparison=comparison, series=series), port=port)
    except OSError as e:
        raise CompareError(f"Cannot listen on 127.0.0.1:{port} ({e.strerror}); pass --port 0 for any free port.") from e
    print(f"viewer: {server_url(server)}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except CompareError as e:
        print(f"engine.compare: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
