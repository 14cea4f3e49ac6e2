"""Turn what the user typed (run folder, job dir, MLflow run id, selector) into run folders."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.compare.loading import CompareError, RunData, find_run_dirs, is_run_dir, load_run, read_record
from engine.record.mlflow_writer import KIND_TAG, flatten, is_task_run, run_kind, run_tags
from engine.types import QUESTION_RUN_KINDS, RunRecord

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
TAG = "evalbench."
# Short selector keys → MLflow tag names written by the engine.
ALIASES: dict[str, str] = {
    "model": "evalbench.model",
    "model.label": "evalbench.model",
    "model.checkpoint": "evalbench.checkpoint_step",
    "model.checkpoint_step": "evalbench.checkpoint_step",
    "model.step": "evalbench.checkpoint_step",
    "checkpoint": "evalbench.checkpoint_step",
    "checkpoint_step": "evalbench.checkpoint_step",
    "step": "evalbench.checkpoint_step",
    "task": "evalbench.task_spec",
    "task_spec": "evalbench.task_spec",
    "task_hash": "evalbench.task_hash",
    "harness": "evalbench.harness",
    "suite": "evalbench.suite",
    "run_id": "evalbench.run_id",
}
STEP_TAG = "evalbench.checkpoint_step"
PARENT_TAG = "mlflow.parentRunId"
MLFLOW_ID = re.compile(r"^[0-9a-f]{32}$")
SELECTOR = re.compile(r"^[A-Za-z_][\w.\-]*=")


@dataclass(frozen=True)
class Candidate:
    """A run known to a source (MLflow or a folder) with the flat key → value map selectors match."""

    keys: Mapping[str, str]
    run_dir: Path | None
    mlflow_run_id: str | None
    start: float


def tracking_uri_of(explicit: str | None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def record_keys(record: RunRecord, run_dir: Path) -> dict[str, str]:
    """The tags and params the MLflow writer sets (`tag.<key>`, `param.<flattened config>`)."""
    tags = {**run_tags(record), "evalbench.run_dir": str(run_dir)}  # where the folder is now
    keys = {f"tag.{k}": v for k, v in tags.items()}
    keys["experiment"] = record.experiment_name
    keys.update({f"param.{k}": v for k, v in flatten(record.config).items()})
    return keys


def parse_selector(text: str) -> list[tuple[str, str]]:
    terms = []
    for part in re.split(r"[,&]", text):
        if not part.strip():
            continue
        if "=" not in part:
            raise CompareError(f"Selector term {part!r} in {text!r} is not of the form key=value.")
        k, v = part.split("=", 1)
        terms.append((k.strip(), v.strip()))
    return terms


def _norm_step(v: str) -> str:
    v = v.strip().lower()
    if v in ("", "none", "base", "null"):
        return ""
    return v[4:] if v.startswith("step") else v


def _lookup_key(key: str) -> list[str]:
    """Names under which a selector key may be stored, most specific first."""
    if key.startswith(("tag.", "tags.")):
        return ["tag." + key.split(".", 1)[1]]
    if key.startswith(("param.", "params.")):
        return ["param." + key.split(".", 1)[1]]
    if key in ("task", "task_spec"):  # a spec (mmlu:mc) or a task name (mmlu)
        return ["tag.evalbench.task_spec", "tag.evalbench.task"]
    if key in ALIASES:
        return ["tag." + ALIASES[key]]
    return ["param." + key, "tag." + key, "tag." + TAG + key]


def _matches(c: Candidate, names: list[str], *, bare: bool, is_step: bool, want: str) -> bool:
    present = [c.keys[n] for n in names if n in c.keys]
    if bare:
        present = present[:1]  # a bare key: the most specific place it is stored
    return any((_norm_step(v) if is_step else v) == want for v in present)


def select(candidates: Iterable[Candidate], selector: str, where: str) -> list[Candidate]:
    cands = list(candidates)
    terms = parse_selector(selector)
    out = cands
    for key, value in terms:
        names = _lookup_key(key)
        if not any(n in c.keys for c in cands for n in names):
            known = sorted({k for c in cands for k in c.keys if k.startswith("tag.evalbench.")})
            raise CompareError(
                f"Unknown selector key {key!r} in {selector!r}: no run in {where} has it. Use one of "
                f"{', '.join(sorted(ALIASES))}, tag.<mlflow tag> (e.g. {', '.join(known[:4]) or 'tag.evalbench.model'}) "
                "or param.<flattened config key>."
            )
        is_step = any(n == "tag." + STEP_TAG for n in names)
        want = _norm_step(value) if is_step else value

        bare = key not in ALIASES and not key.startswith(("tag.", "tags.", "param.", "params."))
        out = [c for c in out if _matches(c, names, bare=bare, is_step=is_step, want=want)]
    if not out:
        raise CompareError(f"No run in {where} matches the selector {selector!r}.")
    return out


def _mlflow_client(uri: str) -> Any:
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise CompareError(
                f"The MLflow store {uri} does not exist (no file {path.resolve()}). Pass a run folder, "
                "or point --tracking-uri / MLFLOW_TRACKING_URI at the store the runs were logged to."
            )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient  # heavy (MLflow, SQLAlchemy): only when a selector needs the store

    return MlflowClient(tracking_uri=uri)


def _mlflow_candidates(client: Any, experiment: str | None, uri: str) -> list[Candidate]:
    """The task runs (task and external kinds) of the experiment, or of every experiment: suite and
    sweep parent runs hold no per-question records (docs/architecture.md, "Run kinds")."""
    return [_candidate_of_mlflow(r) for r in _search(client, _experiment_ids(client, experiment, uri))
            if is_task_run(r.data.tags)]


def _experiment_ids(client: Any, experiment: str | None, uri: str) -> list[str]:
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments()]
            raise CompareError(
                f"There is no MLflow experiment named {experiment!r} in {uri}. Experiments there: "
                f"{', '.join(names) or 'none'}."
            )
        return [exp.experiment_id]
    return [e.experiment_id for e in client.search_experiments()]


def _search(client: Any, ids: list[str], filter_string: str = "") -> list[Any]:
    runs: list[Any] = []
    token = None
    while ids:
        page = client.search_runs(ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def _task_runs_of(client: Any, run: Any) -> list[Any]:
    """A task run itself; for a suite or sweep parent, the task runs nested under it (a sweep's
    suite parents are opened in turn), so a parent's MLflow id names the runs it aggregates."""
    if is_task_run(run.data.tags):
        return [run]
    if run_kind(run.data.tags) is None:
        return []
    children = _search(client, [run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{run.info.run_id}'")
    return [t for child in children for t in _task_runs_of(client, child)]


def _candidate_of_mlflow(run: Any) -> Candidate:
    keys = {f"tag.{k}": v for k, v in run.data.tags.items()}
    keys.update({f"param.{k}": v for k, v in run.data.params.items()})
    rd = run.data.tags.get("evalbench.run_dir")
    return Candidate(keys=keys, run_dir=Path(rd) if rd else None, mlflow_run_id=run.info.run_id, start=float(run.info.start_time or 0))


def _materialize(c: Candidate, uri: str, cache: Path) -> Path:
    """A local run folder for an MLflow run: its run_dir tag if still there, else its artifacts."""
    if c.run_dir is not None and is_run_dir(c.run_dir):
        return c.run_dir
    assert c.mlflow_run_id is not None
    dst = cache / c.mlflow_run_id
    if is_run_dir(dst / "run"):
        return dst / "run"
    import mlflow.artifacts  # deferred: mlflow loads only for MLflow selectors

    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=c.mlflow_run_id, artifact_path="run", dst_path=str(dst), tracking_uri=uri
        )
    except Exception as e:
        raise CompareError(
            f"MLflow run {c.mlflow_run_id} has no readable run folder: its evalbench.run_dir tag "
            f"({c.run_dir}) is gone and downloading its 'run/' artifacts failed ({type(e).__name__}: {e})."
        ) from e
    path = Path(local)
    if not is_run_dir(path):
        raise CompareError(f"The 'run/' artifacts of MLflow run {c.mlflow_run_id} hold no experiment.json.")
    return path


def _folder_candidates(root: Path) -> list[Candidate]:
    """The task runs among the run folders under root (every experiment.json is a task or an
    external run's; suite.json files are suite records, never candidates)."""
    out = []
    for d in find_run_dirs(root):
        rec = read_record(d)
        if rec.kind not in QUESTION_RUN_KINDS:
            continue
        out.append(Candidate(keys=record_keys(rec, d), run_dir=d, mlflow_run_id=rec.mlflow_run_id, start=0.0))
    return out


def resolve(
    spec: str,
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    runs_root: Path | None = None,
    cache_dir: Path | None = None,
) -> list[RunData]:
    """Load every run `spec` names: a run folder, a job/multirun dir, an MLflow run id or a selector."""
    uri = tracking_uri_of(tracking_uri)
    cache = cache_dir or Path(os.environ.get("EVALBENCH_CACHE", Path.home() / ".cache" / "evalbench")) / "compare"
    path = Path(spec)
    if path.exists():
        dirs = find_run_dirs(path)
        if not dirs:
            raise CompareError(f"{spec} holds no run folder (no experiment.json at or below it).")
        return [load_run(d) for d in dirs]
    if SELECTOR.match(spec):
        if runs_root is not None:
            where = f"the run folders under {runs_root}"
            cands = _folder_candidates(runs_root)
            if experiment:
                cands = [c for c in cands if c.keys.get("experiment") == experiment]
        else:
            where = f"MLflow experiment {experiment!r} ({uri})" if experiment else f"the MLflow store {uri}"
            client = _mlflow_client(uri)
            cands = _mlflow_candidates(client, experiment, uri)
        chosen = select(cands, spec, where)
        chosen.sort(key=lambda c: c.start)
        if runs_root is not None:
            return [load_run(c.run_dir) for c in chosen if c.run_dir is not None]
        return [load_run(_materialize(c, uri, cache), c.mlflow_run_id) for c in chosen]
    if MLFLOW_ID.match(spec) or _store_exists(uri):
        client = _mlflow_client(uri)
        run = _get_mlflow_run(client, spec)
        if run is not None:
            found = sorted((_candidate_of_mlflow(r) for r in _task_runs_of(client, run)), key=lambda c: c.start)
            if not found:
                raise CompareError(
                    f"MLflow run {spec} is no evaluation run ({KIND_TAG}={run.data.tags.get(KIND_TAG, 'unset')}, "
                    "no task spec) and has no task runs nested under it. Pass a task run, a suite or sweep "
                    "parent run, a run folder or a selector."
                )
            return [load_run(_materialize(c, uri, cache), c.mlflow_run_id) for c in found]
    raise CompareError(
        f"Cannot find run {spec!r}: it is not an existing path, not a key=value selector, and no MLflow "
        f"run in {uri} has that id (as MLflow run id or evalbench.run_id tag)."
    )


def _store_exists(uri: str) -> bool:
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def _get_mlflow_run(client: Any, spec: str) -> Any:
    from mlflow.exceptions import MlflowException  # deferred: see above

    if MLFLOW_ID.match(spec):
        try:
            return client.get_run(spec)
        except MlflowException:
            pass
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return None
    found = client.search_runs(ids, filter_string=f"tags.`evalbench.run_id` = '{spec}'", max_results=1)
    return found[0] if found else None


def resolve_experiment(
    experiment: str, *, tracking_uri: str | None = None, runs_root: Path | None = None, cache_dir: Path | None = None
) -> list[RunData]:
    """Every run of an experiment (MLflow, or the run folders under runs_root)."""
    uri = tracking_uri_of(tracking_uri)
    if runs_root is not None:
        cands = [c for c in _folder_candidates(runs_root) if c.keys.get("experiment") == experiment]
        if not cands:
            raise CompareError(f"No task run folder under {runs_root} belongs to experiment {experiment!r}.")
        return [load_run(c.run_dir) for c in cands if c.run_dir is not None]
    cache = cache_dir or Path(os.environ.get("EVALBENCH_CACHE", Path.home() / ".cache" / "evalbench")) / "compare"
    cands = _mlflow_candidates(_mlflow_client(uri), experiment, uri)
    if not cands:
        raise CompareError(
            f"MLflow experiment {experiment!r} in {uri} has no task runs (only suite or sweep parent runs, "
            "or runs whose record was never logged). Push run folders that missed the store with "
            "`python -m engine.sync DIRS`, or pass the run folders instead."
        )
    return [load_run(_materialize(c, uri, cache), c.mlflow_run_id) for c in sorted(cands, key=lambda c: c.start)]
