"""Process environment defaults, set once when the `engine` package is imported (every entry point:
`python -m engine`, `evalbench`, `python -m engine.compare`, `from engine import evaluate`).

A closed network must never hang the engine (docs/architecture.md, "Start-up and exit"): litellm's
local price map instead of a download, no MLflow telemetry, short Hugging Face Hub timeouts, and no
progress bars of the libraries (the engine draws its own). A value the user set is kept.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_ETAG_TIMEOUT": "5",
    "HF_HUB_DOWNLOAD_TIMEOUT": "10",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
