"""DataSource: rows through `datasets` from local files, wheel-shipped files or hub ids."""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import logging
import os
import socket
from typing import Any

from engine.config.anchors import LOCAL_BUILDERS as _LOCAL_BUILDERS
from engine.config.paths import resolve_project_path
from engine.config.schema import DataConfig
from engine.data.wheels import resolve_wheel_path


class DataLoadError(RuntimeError):
    pass


def _resolve_path(path: str) -> str:
    """wheel:// URIs; relative paths from the working directory, else from the project root
    (so a task shipped with the project, e.g. freshqa's fixture, runs from anywhere)."""
    path = resolve_wheel_path(path)
    return path if "://" in path else str(resolve_project_path(path))


def _resolve_files(files: Any) -> Any:
    if files is None:
        return None
    if isinstance(files, str):
        return _resolve_path(files)
    if isinstance(files, list):
        return [_resolve_path(f) for f in files]
    return {k: _resolve_files(v) for k, v in files.items()}


def _split_files(files: Any, split: str) -> list[str]:
    """The local files `datasets` reads for `split` (a str or list is the one split given)."""
    if files is None:
        return []
    if isinstance(files, dict):
        files = files.get(split, [])
    return [files] if isinstance(files, str) else [str(f) for f in files]


def _read_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        return fh.read()


def _local_problem(builder: str, files: list[str]) -> str | None:
    """The first empty file or malformed JSON line among local files, as `file:line: what`."""
    for path in files:
        if not os.path.isfile(path):
            continue
        text = _read_text(path)
        if not text.strip():
            return f"{path} is empty"
        if builder != "json" or text.lstrip()[:1] == "[":
            continue
        try:
            json.loads(text)  # one JSON document (not JSON Lines): nothing to point at line by line
            continue
        except ValueError:
            pass
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                return f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}): {line.strip()[:80]!r}"
            if not isinstance(value, dict):
                return f"{path}, line {number}: a JSON Lines row must be an object {{...}}, got {type(value).__name__}"
    return None


def _local_load_error(cfg: DataConfig, split: str, files: Any, err: Exception) -> DataLoadError:
    problem = _local_problem(cfg.path, _split_files(files, split))
    if problem is not None:
        return DataLoadError(
            f"Cannot read the data of split '{split}': {problem}. Fix that file (one JSON object per line for "
            "JSON Lines), or point `task.data.data_files` at another one."
        )
    first = (str(err).splitlines() or [""])[0][:200]
    cause = f"; cause: {type(err.__cause__).__name__}: {str(err.__cause__)[:200]}" if err.__cause__ else ""
    return DataLoadError(
        f"Cannot read the data of split '{split}' with the `{cfg.path}` builder from {files!r} "
        f"({type(err).__name__}: {first}{cause}). Fix the file, or `task.data.path` / `task.data.data_files`."
    )


_WENT_OFFLINE: list[bool] = []


def _hub_unreachable_message(cfg: DataConfig, err: Exception) -> str:
    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    if _WENT_OFFLINE:
        why = "the hub is unreachable (a 3 s connection probe failed)"
    else:
        why = "offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE=1)" if offline else "the hub is unreachable"
    return (
        f"Could not load dataset '{cfg.path}'"
        + (f" subset '{cfg.subset}'" if cfg.subset else "")
        + f" split '{cfg.split}': {why} and it is not in the local cache ({type(err).__name__}: "
        f"{str(err).splitlines()[0][:200]}). Fix: point the task at local files, e.g. "
        f"`task.data.path=json task.data.data_files=/path/to/{cfg.split}.jsonl`, or run once with "
        "network access to fill the datasets cache."
    )


@functools.cache
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One quick TCP probe of the hub; a closed network must fail in seconds, not minutes."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout_s):
            return True
    except OSError:
        return False


def _go_offline() -> None:
    """Use only the local caches from here on (also when datasets is already imported)."""
    _WENT_OFFLINE.append(True)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets.config  # deferred: datasets costs ~1 s to import
    import huggingface_hub.constants

    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True


_SCALARS = (str, int, float, bool)


def _plain_json_lines(cfg: DataConfig, files: Any, split: str) -> list[dict[str, Any]] | None:
    """The rows of plain local JSON Lines files, read without `datasets` (importing it costs ~1 s
    before the first request, and as much again at exit), or None whenever `datasets` could type
    them differently: rows with different keys, a column mixing types (int and float), nested
    objects, a JSON array file, a line that is not an object, a missing file, an unknown split.
    Then `datasets` reads them as before, with its own errors."""
    if cfg.path != "json" or (split != "train" and not isinstance(files, dict)):
        return None
    paths = _split_files(files, split)
    if not paths or not all(os.path.isfile(p) for p in paths):
        return None
    rows: list[dict[str, Any]] = []
    try:
        for path in paths:
            rows += [json.loads(line) for line in _read_text(path).splitlines() if line.strip()]
    except ValueError:
        return None
    if not rows or not all(type(r) is dict for r in rows):
        return None
    keys = list(rows[0])
    key_set = set(keys)
    if any(set(r) != key_set for r in rows):
        return None
    for k in keys:
        seen = {_kind(r[k]) for r in rows} - {None}
        if len(seen) > 1 or "?" in seen:
            return None
    return [{k: r[k] for k in keys} for r in rows]


def _kind(value: Any) -> str | None:
    """A value's column type as `datasets` infers it; "?" when this reader does not decide it."""
    if value is None:
        return None
    if type(value) in _SCALARS:
        return "?" if type(value) is int and abs(value) >= 2**63 else type(value).__name__
    if type(value) is list:  # a list of one scalar type; empty, nested or mixed lists are left to datasets
        inner = {_kind(v) for v in value}
        if len(inner) == 1 and (kind := next(iter(inner))) in ("str", "int", "float", "bool"):
            return f"list[{kind}]"
        return "?"
    return "?"


def load_rows(cfg: DataConfig, split: str | None = None) -> list[dict[str, Any]]:
    """Load one split as a list of row dicts."""
    split = split or cfg.split
    files = _resolve_files(cfg.data_files)
    local = cfg.path in _LOCAL_BUILDERS
    if local and not files:  # `datasets` would read the working directory's files (docs/architecture.md, "Boundaries")
        raise DataLoadError(
            f"The task names no data to read: builder `{cfg.path}` without `task.data.data_files`, and evalbench never "
            "reads files from the working directory implicitly. Fix: set `data_files` in the task file's `data:` (or "
            "`task.data.data_files=<file>`), or name a hub dataset in `task.data.path`."
        )
    if local and (plain := _plain_json_lines(cfg, files, split)) is not None:
        return _kept(cfg, plain, split, files, local)
    # Short hub timeouts so a closed network fails fast instead of hanging.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    if not local and not hub_reachable():
        _go_offline()
    import datasets  # deferred: importing datasets costs ~1 s
    if local and (problem := _local_problem(cfg.path, [f for f in _split_files(files, split) if _is_empty(f)])):
        raise DataLoadError(  # `datasets` fails on an empty file with a bare StopIteration
            f"No rows for split '{split}': {problem}. Fix: fill it (JSON Lines: one object per line), or point "
            "`task.data.data_files` at the right file."
        )
    try:
        if local:
            with _quiet_datasets():
                ds = datasets.load_dataset(cfg.path, data_files=files, split=split)
        else:
            extra = {"trust_remote_code": True} if cfg.trust_remote_code else {}
            ds = datasets.load_dataset(cfg.path, cfg.subset, data_files=files, split=split, revision=cfg.revision, **extra)
    except FileNotFoundError as err:
        if local:
            raise DataLoadError(
                f"Data files for split '{split}' not found ({err}). Fix: check `task.data.data_files`."
            ) from err
        raise DataLoadError(_hub_unreachable_message(cfg, err)) from err
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataLoadError(
                f"Split '{split}' does not exist in '{cfg.path}': {str(err)[:300]}. "
                "Fix: set `task.data.split` to one of the dataset's splits."
            ) from err
        if local:
            raise _local_load_error(cfg, split, files, err) from err
        raise
    except (ConnectionError, OSError) as err:
        if local:
            raise _local_load_error(cfg, split, files, err) from err
        raise DataLoadError(_hub_unreachable_message(cfg, err)) from err
    except Exception as err:  # `datasets` wraps a malformed line in DatasetGenerationError; name the line instead
        if local:
            raise _local_load_error(cfg, split, files, err) from err
        raise
    return _kept(cfg, [dict(r) for r in ds], split, files, local)


def _kept(cfg: DataConfig, rows: list[dict[str, Any]], split: str, files: Any, local: bool) -> list[dict[str, Any]]:
    """The rows after `task.data.exclude`; none at all is an error."""
    if cfg.exclude:
        rows = [r for r in rows if not any(str(r.get(c)) in vals for c, vals in cfg.exclude.items())]
    if not rows:
        excluded = " after `task.data.exclude`" if cfg.exclude else ""
        raise DataLoadError(
            f"Split '{split}' of '{cfg.path}'{' ' + repr(files) if local else ''} has no rows{excluded}: nothing to "
            "evaluate. Fix: point `task.data` at a file or split with rows."
        )
    return rows


@contextlib.contextmanager
def _quiet_datasets():
    """`datasets` logs a malformed local file at ERROR before raising; the DataLoadError we raise
    says it once, with the line number, so the log line is held back (one paragraph, exit 2)."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_empty(path: str) -> bool:
    """No rows at all: a zero-byte file, or a small one of whitespace only."""
    if not os.path.isfile(path):
        return False
    size = os.path.getsize(path)
    return size == 0 or (size < 4096 and not _read_text(path).strip())
