"""`python -m engine [overrides]`: compose with Hydra, validate, run, report.

A single run composes and validates once (Hydra's compose API), then runs. A multirun (`-m`)
validates every combination of the sweep up front, then hands the sweep to Hydra's launcher,
whose jobs compose their own config (they may run in other processes or on other machines).
Errors in user input exit with code 2 and one paragraph, never a traceback.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from engine.config.compose import (
    compose_experiment,
    conf_dir,
    expand_spec_overrides,
    experiment_from_cfg,
    sweep_combinations,
    use_cli_searchpath,
    variants_of,
)
from engine.config.errors import ConfigError
from engine.config.schema import Experiment, TrackingConfig
from engine.data.source import DataLoadError
from engine.data.wheels import MissingWheelError
from engine.help import help_text
from engine.inspect_requests import inspect_experiment
from engine.public import execute
from engine.record.publish import TrackingError
from engine.report import results_table, where_records_are
from engine.scoring.suites import aggregate_report
from engine.sweep import (
    SWEEP_ID_ENV,
    job_result,
    log_sweep_parents,
    missing_jobs,
    new_sweep_id,
    read_job_results,
    summary_table,
    sweep_exit_code,
    write_job_result,
)
from engine.tasks.instance import FieldMapError
from engine.terminate import sigterm_as_interrupt, terminated
from engine.types import ProviderError, RunRecord

# conf/hydra/launcher/*.yaml keep the plugins' own names (`hydra/launcher=joblib` gives evalbench's
# defaults); Hydra 1.3 still checks such a file against the plugin's schema (a misspelt key fails), and
# warns that it will stop doing so in a release that hydra-core==1.3.8 (pyproject.toml) never installs.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")

EXIT_FAILED = 1  # some run has no scored instance
EXIT_PARTIAL = 3  # every run scored, but some instances errored
EXIT_UNTRACKED = 4  # everything scored and in the run folders, but a record missed the tracking store
EXIT_INTERRUPTED = 130  # Ctrl-C: what finished is recorded (status interrupted) and cached
EXIT_TERMINATED = 143  # SIGTERM (a scheduler's stop): the same, engine/terminate.py
USER_ERRORS = (ConfigError, DataLoadError, MissingWheelError, FieldMapError)
HELP_FLAGS = ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--resolve", "--package", "-p")
# A swept task spec (`-m task=a:rc,b`) or task list (`-m task=[a,b],[c]`) is no config-group choice
# Hydra can compose: the launcher carries it under this key, and each job turns it back into `task=`.
SPEC_KEY = "evalbench_task_spec"


def _fail(message: str, code: int = 2) -> None:
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
    """One job of a multirun, composed by Hydra's launcher (maybe in another process or on another
    machine). Its failure is its own: it writes `job_result.json` into its job folder and returns, so
    the launcher goes on with the other jobs (docs/architecture.md, "Sweeps on launchers")."""
    started = time.monotonic()
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    records: list[RunRecord] = []
    exp: Experiment | None = None
    code, reason = 0, None
    try:
        spec = [_unescape(o.partition("=")[2]) for o in overrides if o.partition("=")[0].lstrip("+") == SPEC_KEY]
        if spec:  # a swept task spec or task list: composed again from `task=<spec>` as a single run is
            rest = [o for o in overrides if o.partition("=")[0].lstrip("+") != SPEC_KEY]
            searchpath = [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath=")]
            exp = compose_experiment([*expand_spec_overrides([f"task={spec[-1]}", *rest]), *searchpath,
                                      f"output_dir={_quoted(str(hc.runtime.output_dir))}"])
        else:
            # Hydra leaves list choices (`variant=[rc,5shot]`) out of runtime.choices: read the override.
            given = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("variant=")]
            choices = dict(hc.runtime.choices)
            exp = experiment_from_cfg(cfg, variants_of(given[-1] if given else choices.get("variant")), choices, overrides)
        run_and_report(exp, records)
    except SystemExit as ex:
        code = ex.code if isinstance(ex.code, int) else 1
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            raise  # Ctrl-C (or SIGTERM) ends the whole sweep
        # `_fail` exits inside the `except` that caught the error: the exit's context is that error.
        reason = str(ex.__context__) if ex.__context__ is not None else None
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        code, reason = 2, str(err)
    except Exception as err:  # noqa: BLE001 - a crash in one job (the model, a library) must not end the sweep
        traceback.print_exc()
        code, reason = EXIT_FAILED, f"{type(err).__name__}: {err}"
    job_dir = Path(hc.runtime.output_dir)
    shown = [f"task={_unescape(o.partition('=')[2])}" if o.partition("=")[0].lstrip("+") == SPEC_KEY else o
             for o in overrides]
    write_job_result(job_dir, job_result(int(hc.job.num), job_dir, shown, exp, records, code, reason,
                                         time.monotonic() - started))


def _unescape(value: str) -> str:
    """A value as the sweeper renders it (`a\\:rc`) back to what the user typed (`a:rc`)."""
    return re.sub(r"\\(.)", r"\1", value)


def spec_sweep(args: list[str]) -> list[str]:
    """`task=a:rc,b` or `task=[a,b],[c]` → `+evalbench_task_spec=...` (plain `task=a,b` stays a group sweep)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        spec = sep and key.lstrip("+") == "task" and (":" in value or "[" in value)
        out.append(f"+{SPEC_KEY}={value}" if spec else arg)
    return out


def job_overrides(combination: list[str]) -> list[str]:
    """A sweep combination as a single run's overrides: swept task specs expanded (`task=a variant=[rc]`)."""
    return expand_spec_overrides([f"task={_unescape(o.partition('=')[2])}" if o.partition("=")[0].lstrip("+") == "task"
                                  else o for o in combination])


def _quoted(value: str) -> str:
    """A value in Hydra's override grammar, quoted (a path may hold characters the grammar reserves)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sweep_setup(overrides: list[str], first_job: list[str]) -> str:
    """The sweep folder, resolved once: its `${now:...}` would differ between this process and the
    launcher's, and the summary must read the folder the jobs wrote. The launcher's plugin is checked
    here too, so a missing package is a clear error before any job starts."""
    hydra_args = [a for a in overrides if a.lstrip("+~").startswith("hydra") and not a.startswith("hydra.searchpath")]
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=[*first_job, *hydra_args], return_hydra_config=True)
            sweep_dir = str(OmegaConf.select(cfg, "hydra.sweep.dir"))
            target = str(OmegaConf.select(cfg, "hydra.launcher._target_"))
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors: an unknown launcher, a misspelt key
        text = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(f"Cannot compose the sweep's Hydra configuration: {text.rstrip('.')}. Fix: choose a launcher "
                          "shipped in conf/hydra/launcher (`hydra/launcher=joblib`, `ray` or `submitit_slurm`) and "
                          "set only the keys it has (`python -m engine hydra/launcher=joblib --cfg hydra -p "
                          "hydra.launcher` lists them).") from None
    module = target.rpartition(".")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:
        package = module.split(".")[1].replace("_", "-") if module.startswith("hydra_plugins.") else module
        raise ConfigError(f"The launcher {target} is not installed (package {package}). Fix: install the scale-out "
                          "extra, `pip install -e '.[scale]'` (scripts/install.sh does), or drop `hydra/launcher=` to "
                          "run the jobs one after another in this process.")
    return sweep_dir


def run_sweep(args: list[str], overrides: list[str], combinations: Sequence[list[str]],
              trackings: Sequence[TrackingConfig | None] = ()) -> None:
    """Launch a validated multirun, then print one summary over its jobs, nest the jobs' MLflow runs
    under a parent run of the sweep, and exit with the worst code."""
    try:  # the task does not change the sweep folder nor the launcher: compose it without a swept spec
        sweep_dir = sweep_setup(overrides, [o for o in combinations[0] if o.partition("=")[0].lstrip("+") != "task"])
    except ConfigError as err:
        _fail(str(err))
        return
    sweep_id = new_sweep_id()
    sys.argv = [sys.argv[0], *spec_sweep(args), f"hydra.sweep.dir={_quoted(sweep_dir)}",
                f"++hydra.job.env_set.{SWEEP_ID_ENV}={sweep_id}"]
    launcher_code = 0
    try:
        hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")(_hydra_job)()
    except SystemExit as ex:  # the launcher itself failed (Hydra printed why): still show what the jobs did
        launcher_code = ex.code if isinstance(ex.code, int) else 1
        if launcher_code in (0, EXIT_INTERRUPTED, EXIT_TERMINATED):
            raise
    results = read_job_results(Path(sweep_dir), sweep_id)
    results = sorted([*results, *missing_jobs(results, combinations, Path(sweep_dir))], key=lambda r: r.job)
    print(f"\nSweep {sweep_dir}:")
    print(summary_table(results))
    code = sweep_exit_code(results) or launcher_code
    try:
        parents = log_sweep_parents(sweep_id, Path(sweep_dir), results, trackings)
        if parents:
            print(f"MLflow: the jobs' runs are nested under the sweep's parent run(s) {', '.join(parents)}.")
    except Exception as err:  # noqa: BLE001 - the runs and the summary are recorded; only the nesting is missing
        print(f"warning: the sweep's MLflow parent run was not written ({type(err).__name__}: {str(err)[:300]}); "
              "each job's runs are in the store un-nested.", file=sys.stderr)
        code = code or EXIT_UNTRACKED
    if code:
        sys.exit(code)


def main() -> None:
    sigterm_as_interrupt()  # a scheduler's SIGTERM records what finished, as Ctrl-C does
    try:
        use_cli_searchpath(sys.argv[1:])  # the user's config folders, before any name is checked
        args = expand_spec_overrides(sys.argv[1:])
    except ConfigError as err:
        _fail(str(err))
        return
    if any(a in ("--help", "-h") for a in args):
        print(help_text())  # evalbench's own page; Hydra's is `--hydra-help`
        return
    if any(a in HELP_FLAGS or a.startswith("--cfg") for a in args):
        sys.argv = [sys.argv[0], *args]
        hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")(_hydra_job)()
        return
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    combinations: list[list[str]] = []
    trackings: list[TrackingConfig | None] = []
    try:
        if not multirun:
            exp = compose_experiment(overrides)
        else:
            combinations = sweep_combinations(overrides)
            # every job is valid before the first starts; its tracking says where the sweep's parent run goes
            trackings = [compose_experiment(job_overrides(c)).tracking for c in combinations]
            use_cli_searchpath(overrides)
    except ConfigError as err:
        _fail(str(err))
        return
    if not multirun:
        run_and_report(exp)
        return
    run_sweep(args, overrides, combinations, trackings)
