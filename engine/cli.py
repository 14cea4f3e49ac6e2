"""`python -m engine [overrides]`: compose with Hydra, validate, run, report.

Errors in user input exit with code 2 and one paragraph, never a traceback.
"""

from __future__ import annotations

import os
import sys

# A closed network must never hang the engine: local price map, no telemetry, short hub timeouts.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from engine.config.compose import conf_dir, experiment_from_cfg, precheck, variants_of  # noqa: E402
from engine.config.errors import ConfigError  # noqa: E402


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _run(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from engine.api import ProviderError
    from engine.data.source import DataLoadError
    from engine.data.wheels import MissingWheelError
    from engine.tasks.instance import FieldMapError

    try:
        hc = HydraConfig.get()
        # Hydra leaves list choices (`variant=[rc,5shot]`) out of runtime.choices: read the override.
        given = [o.split("=", 1)[1] for o in hc.overrides.task if o.lstrip("+").startswith("variant=")]
        variants = variants_of(given[-1] if given else hc.runtime.choices.get("variant"))
        exp = experiment_from_cfg(cfg, variants)
        if exp.inspect:
            from engine.inspect_requests import inspect_experiment

            print(inspect_experiment(exp))
            return
        from engine.report import results_table, where_records_are
        from engine.runner.experiment import run_experiment

        records = run_experiment(exp)
    except (ConfigError, DataLoadError, MissingWheelError, FieldMapError) as err:
        _fail(str(err))
        return
    except ProviderError as err:
        _fail(str(err), 2 if err.kind == "config" else 1)
        return
    from engine.suites import aggregate_report

    print()
    print(results_table(records))
    if aggregate := aggregate_report(records, exp.suite):
        print()
        print(aggregate)
    print()
    print(where_records_are(records, exp.tracking.tracking_uri if exp.tracking.mlflow else None))
    if records and all(r.status == "failed" for r in records):
        sys.exit(1)


def main() -> None:
    args = sys.argv[1:]
    wants_help = any(a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c") or a.startswith("--cfg") for a in args)
    if not wants_help:
        try:
            precheck(args)
        except ConfigError as err:
            _fail(str(err))
    app = hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")(_run)
    app()
