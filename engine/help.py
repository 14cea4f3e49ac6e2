"""`python -m engine --help` (and `evalbench --help`): evalbench's own page. Hydra's generic page
stays one flag away (`--hydra-help`). The groups' options are read from the config search path,
so a user's own tasks and suites are listed beside the built-in ones."""

from __future__ import annotations

import textwrap

from engine.config.compose import GROUPS, entries

USAGE = """\
usage: python -m engine [group=option ...] [key=value ...]        (or: evalbench ...)
       python -m engine -m key=a,b ...                             a sweep (Hydra multirun)

Runs an evaluation composed from config groups (conf/ and your own config folders), records it in
the run folder and MLflow, and prints the scores with n, SE, 95% CI and MDE."""

COMMON = """\
common overrides:
  task=NAME[:VARIANT...]        a task spec, e.g. task=mmlu:mc:5shot (variants after colons)
  task=[a,b:rc]                 several tasks as one ad-hoc suite
  suite=NAME                    a named suite (conf/suite)
  model=NAME model.path=DIR     the model; model.path: any Hugging Face checkpoint folder
  harness=NAME                  how a task runs: default, search_agent, code_agent, judge
  limit=N  seed=N               questions per task (a seeded sample); the sampling seed
  output_dir=DIR                where the run folders go (default runs/<date>_<time>)
  tracking=none|sqlite|server   MLflow store (tracking.tracking_uri=..., tracking.experiment_name=...)
  inspect=true                  print the first requests exactly as sent; run nothing
  cache.enabled=false           ask the model again instead of the response cache
  hydra/launcher=joblib         where a sweep's jobs run (joblib, ray, submitit_slurm)"""

EXIT_CODES = """\
exit codes:
  0 every instance scored      1 a run has no scored instance    2 bad input (one paragraph says the fix)
  3 some instances errored     4 a record missed the tracking store (push it with python -m engine.sync)
  130 Ctrl-C, 143 SIGTERM: what finished is recorded and cached; the same command resumes"""

MORE = """\
more:
  python -m engine.list [GROUP] [--json]   every task, variant, suite, harness, model, tool, scorer, metric
  python -m engine.compare A B             paired comparison of two runs (--series: a checkpoint series)
  python -m engine --hydra-help            Hydra's own page; --cfg job prints the composed config
  README.md and docs/architecture.md       the guide and the design"""


def groups_section(width: int = 100) -> str:
    lines = ["config groups (group=option):"]
    for group in GROUPS:
        names = sorted(entries(group))
        body = textwrap.fill(", ".join(names), width=width, initial_indent="", subsequent_indent=" " * 12)
        lines.append(f"  {group:<9} {body}")
    return "\n".join(lines)


def help_text() -> str:
    return "\n\n".join([USAGE, groups_section(), COMMON, EXIT_CODES, MORE])
