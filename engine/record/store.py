"""Safe access to the MLflow tracking store for many evalbench processes at once.

Three failure modes of plain MLflow calls, each seen with 8 runs started together (evalbench
issue 10; docs/architecture.md, "Records that are never lost"):
- a fresh `sqlite:///` store: every process runs MLflow's schema migration at once; they collide
  and leave `_alembic_tmp_*` tables that break later runs too. `client()` creates (or repairs) the
  schema once, under an exclusive `fcntl.flock` on `<db>.lock` beside the database;
- an experiment created by two processes: the loser gets RESOURCE_ALREADY_EXISTS.
  `get_or_create_experiment` re-reads instead;
- a busy store (SQLite "database is locked", a server answering 5xx): `retry` backs off and tries
  again; errors that will not go away (a bad parameter) are raised at once.

And a store that does not answer (a tracking server down, a port nothing listens on, a server that
accepts and never replies) must not stall a run: every call has a deadline (docs/architecture.md,
"The tracking store's deadline"). MLflow's own HTTP retries are off and each request has
REQUEST_TIMEOUT_S (connect and read); `retry` owns retrying, within one STORE_BUDGET_S per outage
for the whole process. Once the budget is spent the store is down for this process: `client()` and
`retry` fail at once (StoreUnreachable) until RECHECK_AFTER_S have passed, then allow one attempt.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from engine.config.paths import evalbench_home

T = TypeVar("T")

# MLflow error codes of failures that a later attempt may not meet.
TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED",
                   "DEADLINE_EXCEEDED", "ABORTED"}
TRANSIENT_TEXT = ("database is locked", "database table is locked", "timed out", "connection", "max retries",
                  "502", "503", "504", "429")
ATTEMPTS = 6
BACKOFF_S = 0.25
MAX_BACKOFF_S = 4.0
REQUEST_TIMEOUT_S = 10  # one HTTP request to a tracking server: connect, and then the answer
STORE_BUDGET_S = 30.0  # what one outage may cost a process, over all its store calls
RECHECK_AFTER_S = 300.0  # a store found down is tried again (once) after this long
# MLflow retries an HTTP request 7 times with backoff factor 2 and waits 120 s per attempt, inside
# each of our attempts (minutes per call): off, so that `retry` alone retries, within the budget.
# A value the user exported wins (and the bound is then theirs).
MLFLOW_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S)}

_prepared: set[str] = set()  # sqlite stores this process has already checked under the lock


class StoreError(Exception):
    """The tracking store cannot be used (a half-migrated database that could not be repaired)."""


class StoreUnreachable(StoreError):
    """The store did not answer within this process's budget; it is not called again for a while."""


class _Outage:
    """This process's view of the store's availability: when its current run of failures began (None:
    the last call was answered) and when the store was declared down."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.down_at: float | None = None
        self.cause = ""

    def answered(self) -> None:
        self.since = self.down_at = None

    def failed(self, started: float, err: BaseException) -> float:
        """Seconds this outage has lasted, counted from the start of its first failed attempt."""
        self.since = started if self.since is None else self.since
        self.cause = f"{type(err).__name__}: {str(err)[:200]}"
        return time.monotonic() - self.since

    def declare_down(self) -> StoreUnreachable:
        self.down_at = time.monotonic()
        return StoreUnreachable(
            f"the tracking store did not answer for {STORE_BUDGET_S:g} s ({self.cause}); this process stops "
            f"calling it for {RECHECK_AFTER_S:g} s")

    def check(self) -> None:
        """Raise at once while the store is down (one attempt is let through every RECHECK_AFTER_S)."""
        if self.down_at is None:
            return
        if time.monotonic() - self.down_at < RECHECK_AFTER_S:
            raise StoreUnreachable(f"the tracking store was found unreachable ({self.cause}) and is not "
                                   "called again yet")
        self.down_at = None  # the next attempt is the re-check; its failure declares the store down again


outage = _Outage()


def error_code(err: BaseException) -> str | None:
    return getattr(err, "error_code", None)


def is_transient(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    code = error_code(err)
    if code is not None and code not in TRANSIENT_CODES:
        return False
    text = str(err).lower()
    return code is not None or any(t in text for t in TRANSIENT_TEXT)


def retry(fn: Callable[[], T], what: str, attempts: int = ATTEMPTS) -> T:
    """`fn()` until it succeeds, with jittered exponential backoff on transient failures, within the
    process's outage budget: past STORE_BUDGET_S of failures the store is declared down
    (StoreUnreachable) and later calls fail at once."""
    for attempt in range(attempts):
        outage.check()
        started = time.monotonic()
        try:
            result = fn()
        except Exception as err:  # classified just below
            if not is_transient(err):
                outage.answered()  # the store answered, with an error that will not go away
                raise
            lasted = outage.failed(started, err)
            if lasted >= STORE_BUDGET_S:
                raise outage.declare_down() from err
            if attempt == attempts - 1:
                raise
            delay = min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.5)
            delay = min(delay, STORE_BUDGET_S - lasted)
            logging.getLogger("evalbench").debug("%s failed (%s); retrying in %.2fs", what, err, delay)
            time.sleep(delay)
        else:
            outage.answered()
            return result
    raise AssertionError("unreachable")


# -- the SQLite store: schema created once, under a lock ----------------------------------------
def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative to the working directory), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def recorded_store(tracking_uri: str, record_dir: Path, started_in: Path | None = None) -> str:
    """The store a record was written to. A relative `sqlite:///` path was relative to the folder the
    run started in (`started_in`, when the record tells it), which is not where `engine.sync` may
    run; else the nearest folder above the record that holds the file. The result is an absolute URI
    (the path may not exist: the caller refuses it), or the URI as given when nothing says more."""
    db = sqlite_path(tracking_uri)
    if db is None or db.is_absolute():
        return tracking_uri
    query = tracking_uri.partition("?")[1] + tracking_uri.partition("?")[2]
    if started_in is not None:
        return f"sqlite:///{started_in / db}{query}"
    for folder in record_dir.absolute().parents:
        if (folder / db).is_file():
            return f"sqlite:///{folder / db}{query}"
    return tracking_uri


def missing_store(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` store that does not exist yet (absolute), else None."""
    db = sqlite_path(tracking_uri)
    return db.absolute() if db is not None and not db.exists() else None


@contextlib.contextmanager
def store_lock(db: Path) -> Iterator[None]:
    """Exclusive among processes on this host (and on file systems where flock is shared)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _leftover_tables(db: Path) -> list[str]:
    if not db.is_file():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'")
        return [r[0] for r in rows]


def _repair(db: Path, tables: list[str], tracking_uri: str) -> None:
    """Finish a migration an earlier race left half done: drop alembic's scratch tables, upgrade."""
    import sqlalchemy  # heavy, and only needed for a damaged store
    from mlflow.store.db.utils import _upgrade_db  # MLflow's own migration entry point

    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        for name in tables:
            conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        conn.commit()
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    try:
        _upgrade_db(engine)  # type: ignore[no-untyped-call]  # mlflow's own migration, untyped
    except Exception as err:  # reported as one clear error
        raise StoreError(
            f"The MLflow store {tracking_uri} was left half-migrated by MLflow processes that started at "
            f"the same time, and repairing it failed ({type(err).__name__}: {err}). The run folders hold "
            f"every record: move {db} aside and push them into a fresh store with `python -m engine.sync "
            "runs/` (or point tracking.tracking_uri elsewhere)."
        ) from err
    finally:
        engine.dispose()


def _schema_template() -> Path:
    """An empty SQLite store with MLflow's schema fully migrated, built once per MLflow version under
    the evalbench home. Migrating a fresh store runs ~60 alembic steps (2-4 s of CPU); copying this
    file takes milliseconds. Experiment 0 ("Default") is removed from it: MLflow re-creates it on
    first open with the artifact root of the process that opens the copy, exactly as on a fresh store."""
    import mlflow  # heavy; only when tracking is on
    from mlflow.tracking import MlflowClient

    template = evalbench_home() / "mlflow-schema" / f"mlflow-{mlflow.__version__}.db"
    if template.is_file():
        return template
    with store_lock(template):
        if template.is_file():
            return template
        scratch = template.with_name(f"{template.name}.{os.getpid()}.tmp")
        scratch.unlink(missing_ok=True)
        MlflowClient(tracking_uri=f"sqlite:///{scratch}").search_experiments(max_results=1)
        with contextlib.closing(sqlite3.connect(scratch, timeout=30)) as conn:
            conn.execute("DELETE FROM experiments WHERE experiment_id = 0")
            conn.commit()
        os.replace(scratch, template)
    return template


def _create_from_template(db: Path) -> None:
    """A new store as a copy of the migrated template (atomically: a reader never sees half a file)."""
    try:
        template = _schema_template()
    except Exception as err:  # noqa: BLE001 - the template is an optimisation: MLflow migrates instead
        logging.getLogger("evalbench").debug("no MLflow schema template (%s); migrating the store", err)
        return
    scratch = db.with_name(f"{db.name}.{os.getpid()}.tmp")
    shutil.copyfile(template, scratch)
    os.replace(scratch, db)


def _prepare_sqlite(tracking_uri: str, db: Path) -> None:
    from mlflow.tracking import MlflowClient  # heavy; only when tracking is on

    with store_lock(db):
        leftovers = _leftover_tables(db)
        if leftovers:
            _repair(db, leftovers, tracking_uri)
        elif not db.exists():
            _create_from_template(db)
        # The first store built for this URI creates and migrates the schema; later ones only check it.
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)


def client(tracking_uri: str) -> Any:
    """An MlflowClient for `tracking_uri`, its SQLite schema made ready first (once per process)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name, value in MLFLOW_HTTP_ENV.items():  # read by MLflow at each request
        os.environ.setdefault(name, value)
    outage.check()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient  # heavy; only when tracking is on

    db = sqlite_path(tracking_uri)
    if db is not None and tracking_uri not in _prepared:
        _prepare_sqlite(tracking_uri, db)
        _prepared.add(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


# -- experiments --------------------------------------------------------------------------------
def get_or_create_experiment(mlflow_client: Any, name: str) -> str:
    """The id of experiment `name`, created if missing; a concurrent creator's experiment is reused."""

    def attempt() -> str:
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                mlflow_client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        try:
            return str(mlflow_client.create_experiment(name))
        except Exception as err:  # another process won the race: read its experiment
            if error_code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
        again = mlflow_client.get_experiment_by_name(name)
        if again is None:
            raise RuntimeError(f"MLflow reported experiment {name!r} as existing but does not return it")
        return str(again.experiment_id)

    return retry(attempt, f"get or create experiment {name!r}")
