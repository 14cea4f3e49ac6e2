"""A multirun (`python -m engine -m ...`), from the command line to its summary: the one module of a sweep.

In the order it runs (docs/architecture.md, "Sweeps on launchers"):

1. The parent (`run_sweep`): every job's overrides (`sweep_jobs`), each composed and validated before
   the first job starts; the sweep folder and the launcher resolved once (`sweep_setup`).
2. Hydra's launcher (`run_hydra`: Hydra's own command line, given the overrides rather than
   `sys.argv`) runs `sweep_job` once per job, maybe in other processes or on other machines. A
   swept task spec or task list (`-m task=a:rc,b`, `task=[a,b],[c]`) is no config-group choice
   Hydra can compose: it travels under `+evalbench_task_spec=` and the job composes `task=<spec>`.
   A job never ends the sweep: whatever happens to it, `job_result.json` lands in its job folder.
   Under joblib the job runs in a forked child of the worker (`run_isolated`): a job killed (out
   of memory, SIGKILL) is one failed job, where loky would end the pool and every sibling with it.
3. The parent again: the jobs' results (a placeholder for a job that wrote none), one summary table,
   the sweep's MLflow parent runs, and the worst exit code.
"""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import os
import signal
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.utils import _run_hydra, get_args_parser
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from engine.config.compose import compose_experiment, conf_dir, experiment_from_cfg
from engine.config.errors import ConfigError
from engine.config.overrides import Override, ParsedOverrides, parse_override, quote
from engine.config.prepare import expand_specs, prepare, variants_of
from engine.config.schema import Experiment
from engine.outcome import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_TERMINATED, EXIT_UNTRACKED, fail, run_and_report
from engine.record.sweep import (
    RESULT_FILE,
    SWEEP_ID_ENV,
    JobResult,
    JobStatus,
    job_run,
    log_sweep_parents,
    new_sweep_id,
    read_job_results,
    summary_table,
    sweep_exit_code,
    write_job_result,
)
from engine.types import RunRecord

# conf/hydra/launcher/*.yaml keep the plugins' own names (`hydra/launcher=joblib` gives evalbench's
# defaults); Hydra 1.3 still checks such a file against the plugin's schema (a misspelt key fails), and
# warns that it will stop doing so in a release that hydra-core==1.3.8 (pyproject.toml) never installs.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")

SPEC_KEY = "evalbench_task_spec"  # a swept task spec or task list, on its way to the launcher
ISOLATED_LAUNCHERS = ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",)


def sweep_id_override(sweep_id: str) -> str:
    """The override that gives every job the sweep's id, quoted: unquoted, Hydra's grammar reads an id
    such as `472e44854063` as the float inf and `000000000123` as the int 123, and the parent then
    found none of its jobs' results (each job recorded its id as `inf`)."""
    return f"++hydra.job.env_set.{SWEEP_ID_ENV}={quote(sweep_id)}"


def is_spec_sweep(o: Override) -> bool:
    """`task=a:rc,b` or `task=[a,b],[c]` (plain `task=a,b` stays a config-group sweep Hydra composes)."""
    return o.key == "task" and o.value is not None and (o.is_list or any(c.is_list or ":" in c.names[0]
                                                                          for c in o.choices if c.names))


def sweep_combinations(parsed: ParsedOverrides, limit: int = 10_000) -> list[ParsedOverrides]:
    """Every job's overrides as typed (`a=1,2 b=x,y` → 4), Hydra's own settings left to the launcher
    (the search path stays: each job composes with it)."""
    own = [o.choices for o in parsed if not o.key.startswith("hydra")]
    searchpath = [o for o in parsed if o.key == "hydra.searchpath"][-1:]
    return [ParsedOverrides(items=(*c, *searchpath)) for c in itertools.islice(itertools.product(*own), limit)]


def sweep_jobs(parsed: ParsedOverrides) -> list[ParsedOverrides]:
    """Each job's overrides as a single run's: a swept task spec expanded (`task=a variant=[rc]`)."""
    return [expand_specs(c) for c in sweep_combinations(parsed)]


def launcher_overrides(parsed: ParsedOverrides) -> list[str]:
    """The overrides the launcher gets: swept specs and task lists under SPEC_KEY, the rest as typed."""
    return [f"+{SPEC_KEY}={o.value}" if is_spec_sweep(o) else o.text for o in parsed]


def run_hydra(argv: list[str]) -> None:
    """Hydra's own command line (`--multirun`, `--cfg job`, `--info`, ...) on `argv`, with `sweep_job`
    as the task function: what `@hydra.main` does with `sys.argv`."""
    parser = get_args_parser()
    _run_hydra(args=parser.parse_args(argv), args_parser=parser, task_function=sweep_job,
               config_path=str(conf_dir()), config_name="config")


def sweep_setup(parsed: ParsedOverrides, first_job: ParsedOverrides) -> str:
    """The sweep folder, resolved once: its `${now:...}` would differ between this process and the
    launcher's, and the summary must read the folder the jobs wrote. The launcher's plugin is checked
    here too, so a missing package is a clear error before any job starts."""
    hydra_args = [o.text for o in parsed if o.key.startswith(("hydra.", "hydra/")) and o.key != "hydra.searchpath"]
    try:  # the task does not change the sweep folder nor the launcher: composed without one
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=[*first_job.without("task", "variant").strings(), *hydra_args],
                          return_hydra_config=True)
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


def run_sweep(parsed: ParsedOverrides) -> None:
    """Validate every job, launch the sweep, then print one summary over its jobs, nest the jobs'
    MLflow runs under a parent run of the sweep, and exit with the worst code."""
    combinations = sweep_combinations(parsed)
    try:
        jobs = [expand_specs(c) for c in combinations]
        # every job is valid before the first starts; its tracking says where the sweep's parent run goes
        trackings = [compose_experiment(job).tracking for job in jobs]
        sweep_dir = sweep_setup(parsed, jobs[0])
    except ConfigError as err:
        fail(str(err))
        return
    sweep_id = new_sweep_id()
    launcher_code = 0
    try:
        run_hydra(["--multirun", *launcher_overrides(parsed), f"hydra.sweep.dir={quote(sweep_dir)}",
                   sweep_id_override(sweep_id)])
    except SystemExit as ex:  # the launcher itself failed (Hydra printed why): still show what the jobs did
        launcher_code = ex.code if isinstance(ex.code, int) else 1
        if launcher_code in (0, EXIT_INTERRUPTED, EXIT_TERMINATED):
            raise
    results = read_job_results(Path(sweep_dir), sweep_id)
    results = sorted([*results, *missing_jobs(results, [c.strings() for c in combinations], Path(sweep_dir))],
                     key=lambda r: r.job)
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


def _typed_value(o: Override) -> str:
    """A value as the user typed it (the sweeper escapes `a:rc` as `a\\:rc`)."""
    return o.plain if o.plain is not None else f"[{','.join(o.names)}]"


def _shown(o: Override) -> str:
    """An override as the summary shows it: a swept spec as the `task=` the user typed."""
    return f"task={_typed_value(o)}" if o.key == SPEC_KEY else o.text


def sweep_job(cfg: DictConfig) -> None:
    """One job of a multirun, composed by Hydra's launcher (maybe in another process or on another
    machine). Its failure is its own: `job_result.json` lands in its job folder and it returns, so the
    launcher goes on with the other jobs."""
    started = time.monotonic()
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    overrides = ParsedOverrides.parse(hc.overrides.task)
    shown = [_shown(o) for o in overrides]
    given = overrides.last("task", "suite", SPEC_KEY)
    spec = _typed_value(given) if given is not None and given.value is not None else "-"

    def job() -> None:
        records: list[RunRecord] = []
        exp: Experiment | None = None
        code, reason = 0, None
        try:
            exp = job_experiment(cfg, hc, overrides)
            run_and_report(exp, records)
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else 1
            if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
                raise  # Ctrl-C (or SIGTERM) ends the whole sweep
            # `fail` exits inside the `except` that caught the error: the exit's context is that error.
            reason = str(ex.__context__) if ex.__context__ is not None else None
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            code, reason = 2, str(err)
        except Exception as err:  # noqa: BLE001 - a crash in one job (the model, a library) must not end the sweep
            traceback.print_exc()
            code, reason = EXIT_FAILED, f"{type(err).__name__}: {err}"
        write_job_result(job_dir, job_result(int(hc.job.num), job_dir, shown, spec, exp, records, code, reason,
                                             time.monotonic() - started))

    if hc.launcher.get("_target_") in ISOLATED_LAUNCHERS:
        run_isolated(job, lambda why: write_job_result(job_dir, job_result(
            int(hc.job.num), job_dir, shown, spec, None, [], EXIT_FAILED, why, time.monotonic() - started)), job_dir)
    else:
        job()


def job_experiment(cfg: DictConfig, hc: HydraConf, overrides: ParsedOverrides) -> Experiment:
    """The job's experiment: a swept spec composed again from `task=<spec>` as a single run is; any
    other job from the config the launcher composed."""
    spec = overrides.last(SPEC_KEY)
    if spec is not None and spec.value is not None:
        searchpath = [o.text for o in ParsedOverrides.parse(hc.overrides.hydra) if o.key == "hydra.searchpath"]
        job = ParsedOverrides(items=(parse_override(f"task={spec.value}"), *overrides.without(SPEC_KEY).items))
        return compose_experiment(prepare(job.plus(*searchpath, f"output_dir={quote(str(hc.runtime.output_dir))}")))
    # Hydra leaves list choices (`variant=[rc,5shot]`) out of runtime.choices: read the override.
    given = overrides.last("variant")
    choices = dict(hc.runtime.choices)
    return experiment_from_cfg(cfg, variants_of(given.names if given else choices.get("variant")), choices,
                               overrides.typed_keys())


def run_isolated(job: Callable[[], None], record_failure: Callable[[str], object], job_dir: Path) -> None:
    """Run `job` in a forked child and wait for it. A child that ends without writing its result
    (killed by the out-of-memory killer, SIGKILL, a crash in native code) is recorded as failed with
    the cause; the worker itself lives on, so the launcher's pool and the sibling jobs do too."""
    (job_dir / RESULT_FILE).unlink(missing_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # the child: the job, its own exit handlers, then out without the worker's clean-up
        atexit._clear()
        code = 0
        try:
            job()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else EXIT_FAILED
        except BaseException:  # noqa: BLE001 - whatever escapes, the child must end here, not in the worker's code
            traceback.print_exc()
            code = EXIT_FAILED
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    while True:
        try:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            break
        except KeyboardInterrupt:  # the child got the same Ctrl-C: it records what finished, then exits
            continue
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        raise SystemExit(code)  # Ctrl-C (or SIGTERM) ends the whole sweep
    if (job_dir / RESULT_FILE).is_file():
        return
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the out-of-memory killer sends it: give the job more memory or fewer workers)" if name == "SIGKILL" else ""
        record_failure(f"the job's process was killed by {name}{hint}; nothing of it is recorded")
    else:
        record_failure(f"the job's process exited with code {code} before recording a result")


def status_of(code: int) -> JobStatus:
    """A job's exit code (engine/outcome.py's codes) as a status: 1, 2 or any other failure is `failed`."""
    statuses: dict[int, JobStatus] = {0: "finished", EXIT_PARTIAL: "partial", EXIT_UNTRACKED: "untracked"}
    return statuses.get(code, "failed")


def default_reason(code: int, records: Sequence[RunRecord], job_dir: Path) -> str | None:
    """Why a job that ended without an exception did not finish cleanly (the runs it recorded say)."""
    if code == 0:
        return None
    failed = [r for r in records if r.status == "failed"]
    if failed:
        r = failed[0]
        return (f"{r.task_spec}: no instance scored ({r.counts.errored} of {r.counts.n} errored); "
                f"the errors are in {r.run_dir}/instances.jsonl")
    if code == EXIT_PARTIAL:
        errored = sum(r.counts.errored for r in records)
        return f"{errored} instance(s) errored; scores are over the scored instances only"
    if code == EXIT_UNTRACKED:
        return f"a record missed the tracking store; push it with `python -m engine.sync {job_dir}`"
    return f"exit code {code}"


def job_result(job: int, job_dir: Path, overrides: Sequence[str], spec: str, exp: Experiment | None,
               records: Sequence[RunRecord], code: int, reason: str | None, wall_s: float = 0.0) -> JobResult:
    """What a job did; `spec` is the task spec (or suite) as typed, shown when nothing composed."""
    model = "-"
    if exp is not None:
        model = exp.model.path or exp.model.name
        if exp.suite is not None:
            spec = exp.suite.name
        elif exp.task is not None:
            spec = ":".join([exp.task.name, *exp.task.variants])
    return JobResult(sweep_id=os.environ.get(SWEEP_ID_ENV) or None, job=job, job_dir=str(job_dir), overrides=list(overrides), model=model,
                     task_spec=spec, status=status_of(code), exit_code=code,
                     reason=reason or default_reason(code, records, job_dir), runs=[job_run(r) for r in records],
                     host=socket.gethostname(), pid=os.getpid(), wall_s=round(wall_s, 3))


def missing_jobs(results: Sequence[JobResult], combinations: Sequence[Sequence[str]], sweep_dir: Path) -> list[JobResult]:
    """A placeholder for each job that wrote no result (its process died: killed, out of memory, a node lost)."""
    done = {r.job for r in results}
    return [JobResult(job=i, job_dir=str(sweep_dir / str(i)), overrides=list(combo), model="?", task_spec="?",
                      status="missing", exit_code=EXIT_FAILED,
                      reason=f"no {RESULT_FILE}: the job's process ended before writing it (see the launcher's logs)")
            for i, combo in enumerate(combinations) if i not in done]
