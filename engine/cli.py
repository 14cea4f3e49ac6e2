"""`python -m engine [overrides]`: compose with Hydra, validate, run, report.

A single run composes and validates once (Hydra's compose API), then runs. A multirun (`-m`)
validates every combination of the sweep up front, then hands the sweep to Hydra's launcher,
whose jobs compose their own config (they may run in other processes or on other machines).
Errors in user input exit with code 2 and one paragraph, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from engine.api import ProviderError, RunRecord  # noqa: E402
from engine.config.compose import (  # noqa: E402
    compose_experiment,
    conf_dir,
    expand_spec_overrides,
    experiment_from_cfg,
    sweep_combinations,
    task_list,
    use_cli_searchpath,
    variants_of,
)
from engine.config.errors import ConfigError  # noqa: E402
from engine.config.schema import Experiment  # noqa: E402
from engine.data.source import DataLoadError  # noqa: E402
from engine.data.wheels import MissingWheelError  # noqa: E402
from engine.inspect_requests import inspect_experiment  # noqa: E402
from engine.record.publish import TrackingError  # noqa: E402
from engine.record.suite import record_suite  # noqa: E402
from engine.report import results_table, where_records_are  # noqa: E402
from engine.runner.experiment import run_experiment  # noqa: E402
from engine.scoring.suites import aggregate_report, suite_score  # noqa: E402
from engine.tasks.instance import FieldMapError  # noqa: E402

EXIT_FAILED = 1  # some run has no scored instance
EXIT_PARTIAL = 3  # every run scored, but some instances errored
EXIT_UNTRACKED = 4  # everything scored and in the run folders, but a record missed the tracking store
USER_ERRORS = (ConfigError, DataLoadError, MissingWheelError, FieldMapError)
HELP_FLAGS = ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--resolve", "--package", "-p")


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def exit_code(records: list[RunRecord]) -> int:
    """0 all scored; EXIT_FAILED when a run has no scored instance; EXIT_PARTIAL when some errored."""
    if any(r.status == "failed" for r in records):
        return EXIT_FAILED
    return EXIT_PARTIAL if any(r.counts.errored for r in records) else 0


def check_writable(folder: Path) -> None:
    """Refuse before any compute an output folder the records could not be written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".evalbench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"The output folder {folder} is not writable ({err.strerror or err}). Fix: make it writable, or "
            "write the records elsewhere with `output_dir=/a/writable/folder`."
        ) from None


def run_and_report(exp: Experiment) -> None:
    """Run a validated experiment, print the table, exit with `exit_code`."""
    records: list[RunRecord] = []
    untracked: list[TrackingError] = []
    try:
        if exp.inspect:
            print(inspect_experiment(exp))
            return
        check_writable(Path(exp.output_dir))
        run_experiment(exp, records, untracked)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        if records:
            print()
            print(results_table(records))
        print("\ninterrupted; every finished response is cached: re-run the same command to resume.", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as err:
        _fail(str(err))
        return
    except OSError as err:  # a read-only or full disk while writing records
        print(f"error: cannot write the records under {exp.output_dir}: {err.strerror or err} "
              f"({getattr(err, 'filename', None) or exp.output_dir}). Every finished response is cached and no "
              "run folder is half-written; fix: free disk space or make the folder writable (or set "
              "`output_dir=...`), then re-run the same command to resume.", file=sys.stderr)
        sys.exit(2)
    except ProviderError as err:
        _fail(str(err), 2 if err.kind == "config" else 1)
        return
    print()
    print(results_table(records))
    if aggregate := aggregate_report(records, exp.suite):
        print()
        print(aggregate)
    if exp.suite is not None and exp.suite.aggregate != "none":
        try:  # suite.json beside the run folders, and an MLflow parent run over them
            record_suite(Path(exp.output_dir), suite_score(exp.suite, records), records, exp.tracking)
        except TrackingError as err:
            untracked.append(err)
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


def _hydra_job(cfg: DictConfig) -> None:
    """One job of a multirun, composed by Hydra's launcher."""
    hc = HydraConfig.get()
    # Hydra leaves list choices (`variant=[rc,5shot]`) out of runtime.choices: read the override.
    given = [o.split("=", 1)[1] for o in hc.overrides.task if o.lstrip("+").startswith("variant=")]
    try:
        choices = dict(hc.runtime.choices)
        exp = experiment_from_cfg(cfg, variants_of(given[-1] if given else choices.get("variant")), choices,
                                  list(hc.overrides.task))
    except ConfigError as err:
        _fail(str(err))
        return
    run_and_report(exp)


def main() -> None:
    try:
        use_cli_searchpath(sys.argv[1:])  # the user's config folders, before any name is checked
        args = expand_spec_overrides(sys.argv[1:])
    except ConfigError as err:
        _fail(str(err))
        return
    if any(a in HELP_FLAGS or a.startswith("--cfg") for a in args):
        sys.argv = [sys.argv[0], *args]
        hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")(_hydra_job)()
        return
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    try:
        if multirun and task_list(overrides):
            raise ConfigError("A task list (`task=[a,b]`) runs as one ad-hoc suite and cannot be swept with -m. Fix: "
                              "drop -m, or sweep the tasks as `-m task=a,b`.")
        if not multirun:
            exp = compose_experiment(overrides)
        else:
            for combination in sweep_combinations(overrides):
                compose_experiment(combination)  # every job is valid before the first starts
            use_cli_searchpath(overrides)
    except ConfigError as err:
        _fail(str(err))
        return
    if not multirun:
        run_and_report(exp)
        return
    sys.argv = [sys.argv[0], *args]
    hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")(_hydra_job)()
