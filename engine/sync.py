"""`python -m engine.sync PATH... [--tracking-uri URI]`: push run folders that missed the store.

A PATH is a run folder (it has experiment.json) or any folder above run folders (searched
recursively; suite.json files found there are pushed too, after their task runs). A folder whose
record is already in the store (a finished MLflow run with its evalbench.run_id tag) is skipped,
so syncing twice is harmless. Without --tracking-uri each folder goes to the store it was recorded
with: a relative `sqlite:///mlruns.db` is relative to the folder the run was started in (or, when
the record does not tell it, the nearest such file above the record), never a new file in the
current directory. A store that does not
exist is refused (exit 2) unless --create is given: a path resolved from the wrong folder must not
make a new, empty store and report success (docs/architecture.md, "MLflow mirrors the run folder").

Exit codes: 0 every record is in the store; 1 some could not be pushed (named, with the reason);
2 a PATH holds no run folder, or a store does not exist (without --create).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.config.schema import TrackingConfig
from engine.record.folder import RUN_FILE, SUITE_FILE, record_kind
from engine.record.publish import SyncOutcome, push_run_folder
from engine.record.store import missing_store, recorded_store
from engine.record.suite import push_suite_file
from engine.types import QUESTION_RUN_KINDS, SUITE_RUN


def collect(paths: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(run folders, job folders with suite.json, paths holding neither), each in a stable order.
    A record file is sorted by the run kind it declares (docs/architecture.md, "Run kinds")."""
    runs: dict[Path, None] = {}
    suites: dict[Path, None] = {}
    empty = []
    for path in paths:
        if not path.is_dir():
            empty.append(path)
            continue
        run_files = [path / RUN_FILE] if (path / RUN_FILE).is_file() else sorted(path.rglob(RUN_FILE))
        # An unreadable experiment.json stays a run folder: pushing it names what is wrong with it.
        found_runs = [p.parent for p in run_files if record_kind(p) in (*QUESTION_RUN_KINDS, None)]
        found_suites = sorted(p.parent for p in path.rglob(SUITE_FILE) if record_kind(p) in (SUITE_RUN, None))
        if not found_runs and not found_suites:
            empty.append(path)
        runs.update(dict.fromkeys(found_runs))
        suites.update(dict.fromkeys(found_suites))
    return list(runs), list(suites), empty


def describe(outcome: SyncOutcome) -> str:
    what = {"pushed": "pushed to", "skipped": "already in", "in_progress": "still being recorded by its process as"}
    return f"{outcome.kind:<5} {outcome.path}: {what[outcome.action]} MLflow run {outcome.mlflow_run_id}"


def target_store(folder: Path, tracking_uri: str | None) -> str | None:
    """The store a folder's record goes to: `tracking_uri` as typed, else the one it was recorded with
    (store.recorded_store); None when the record is unreadable (pushing it names the problem)."""
    if tracking_uri is not None:
        return tracking_uri
    run_file, suite_file = folder / RUN_FILE, folder / SUITE_FILE
    try:
        data = json.loads((run_file if run_file.is_file() else suite_file).read_text())
        config = (data.get("config") or {}) if run_file.is_file() else {"tracking": data.get("tracking")}
        uri = (config.get("tracking") or {}).get("tracking_uri") or TrackingConfig().tracking_uri
    except (OSError, ValueError, AttributeError):
        return None
    return recorded_store(str(uri), folder, started_in(folder, config.get("output_dir")))


def started_in(run_dir: Path, output_dir: object) -> Path | None:
    """The folder a run was started in, when its record tells it: a relative `output_dir` is the tail
    of the run folder's parent (`<started in>/<output_dir>/<task spec>`)."""
    if not isinstance(output_dir, str) or not output_dir or Path(output_dir).is_absolute():
        return None
    parent, tail = run_dir.absolute().parent, Path(output_dir).parts
    if parent.parts[-len(tail):] != tail:
        return None
    return parent.parents[len(tail) - 1]


def missing_stores_message(missing: dict[Path, list[Path]]) -> str:
    """One paragraph naming each store that does not exist and the folders that would go there."""
    where = "; ".join(f"{db} (for {', '.join(map(str, folders[:3]))}{' ...' if len(folders) > 3 else ''})"
                      for db, folders in missing.items())
    return (f"error: the MLflow store {where} does not exist. engine.sync pushes into an existing store and "
            "does not create one: a relative `sqlite:///` path resolved from another folder would make a new, "
            "empty store and report success. Fix: run it from the folder the runs were started in, name the "
            "store with `--tracking-uri sqlite:////absolute/path/mlruns.db`, or pass `--create` to create it.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders above them")
    parser.add_argument("--tracking-uri", default=None, help="the store to push to (default: each record's own)")
    parser.add_argument("--create", action="store_true", help="create a SQLite store that does not exist yet")
    args = parser.parse_args(argv)
    runs, suites, empty = collect(args.paths)
    if empty:
        print(f"error: {', '.join(map(str, empty))}: no run folder (a folder with {RUN_FILE}) there. Pass "
              "run folders, or a folder that contains them (e.g. runs/).", file=sys.stderr)
        return 2
    stores = {p: target_store(p, args.tracking_uri) for p in [*runs, *suites]}
    missing: dict[Path, list[Path]] = {}
    for path, uri in stores.items():
        if uri is not None and (db := missing_store(uri)) is not None:
            missing.setdefault(db, []).append(path)
    if missing and not args.create:
        print(missing_stores_message(missing), file=sys.stderr)
        return 2
    failed = 0
    for path, push in [*((p, push_run_folder) for p in runs), *((p, push_suite_file) for p in suites)]:
        try:
            outcome = push(path, stores[path] or args.tracking_uri)
        except Exception as err:  # noqa: BLE001 - reported per folder; the others still sync
            failed += 1
            print(f"failed {path}: {type(err).__name__}: {str(err)[:500]}", file=sys.stderr)
            continue
        failed += outcome.action == "in_progress"
        print(describe(outcome))
    total = len(runs) + len(suites)
    print(f"{total - failed} of {total} record(s) in the store.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
