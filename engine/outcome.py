"""One validated experiment run from the command line: execute it, print its table, exit with its code.

`python -m engine` (engine/cli.py) and every job of a sweep (engine/sweep.py) end here. The exit
codes are the command's contract (`python -m engine --help` lists them, engine/help.py): errors in
user input exit 2 with one paragraph, never a traceback.
"""

from __future__ import annotations

import sys

from engine.config.errors import ConfigError
from engine.config.schema import Experiment
from engine.data.source import DataLoadError
from engine.data.wheels import MissingWheelError
from engine.inspect_requests import inspect_experiment
from engine.public import execute
from engine.record.publish import TrackingError
from engine.report import results_table, where_records_are
from engine.scoring.suites import aggregate_report
from engine.tasks.instance import FieldMapError
from engine.terminate import terminated
from engine.types import ProviderError, RunRecord

EXIT_FAILED = 1  # some run has no scored instance
EXIT_PARTIAL = 3  # every run scored, but some instances errored
EXIT_UNTRACKED = 4  # everything scored and in the run folders, but a record missed the tracking store
EXIT_INTERRUPTED = 130  # Ctrl-C: what finished is recorded (status interrupted) and cached
EXIT_TERMINATED = 143  # SIGTERM (a scheduler's stop): the same, engine/terminate.py
USER_ERRORS = (ConfigError, DataLoadError, MissingWheelError, FieldMapError)


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def exit_code(records: list[RunRecord]) -> int:
    """0 all scored; EXIT_FAILED when a run has no scored instance; EXIT_PARTIAL when some errored."""
    if any(r.status == "failed" for r in records):
        return EXIT_FAILED
    return EXIT_PARTIAL if any(r.counts.errored for r in records) else 0


def run_and_report(exp: Experiment, records: list[RunRecord] | None = None) -> None:
    """Run a validated experiment, print the table, exit with `exit_code`; `records` (when given)
    receives the finished runs' records (a sweep's job reports them)."""
    records = [] if records is None else records
    untracked: list[TrackingError] = []
    try:
        if exp.inspect:
            print(inspect_experiment(exp))
            return
        execute(exp, records, untracked)  # run folders, the suite record and MLflow (engine/public.py)
    except KeyboardInterrupt:
        if records:
            print()
            print(results_table(records))
        how = "terminated (SIGTERM)" if terminated() else "interrupted"
        print(f"\n{how}; every finished response is cached: re-run the same command to resume.", file=sys.stderr)
        sys.exit(EXIT_TERMINATED if terminated() else EXIT_INTERRUPTED)
    except USER_ERRORS as err:
        fail(str(err))
        return
    except OSError as err:  # a read-only or full disk while writing records
        print(f"error: cannot write the records under {exp.output_dir}: {err.strerror or err} "
              f"({getattr(err, 'filename', None) or exp.output_dir}). Every finished response is cached and no "
              "run folder is half-written; fix: free disk space or make the folder writable (or set "
              "`output_dir=...`), then re-run the same command to resume.", file=sys.stderr)
        sys.exit(2)
    except ProviderError as err:
        fail(str(err), 2 if err.kind == "config" else 1)
        return
    print()
    print(results_table(records))
    if aggregate := aggregate_report(records, exp.suite):
        print()
        print(aggregate)
    print()
    print(where_records_are(records, exp.tracking.tracking_uri if exp.tracking.mlflow else None))
    code = exit_code(records)
    if untracked:
        dirs = " ".join(str(d) for err in untracked for d in err.run_dirs)
        print(f"\nerror: {len(untracked)} record(s) did not reach the tracking store {exp.tracking.tracking_uri} "
              f"({untracked[0]}). The run folders are complete; push them later with `python -m engine.sync {dirs}`.",
              file=sys.stderr)
        code = code or EXIT_UNTRACKED
    if code == EXIT_PARTIAL:
        errored = sum(r.counts.errored for r in records)
        print(f"\n{errored} instance(s) errored: scores are over the scored instances only (see `errors`); "
              f"exit code {EXIT_PARTIAL}.", file=sys.stderr)
    if code:
        sys.exit(code)
