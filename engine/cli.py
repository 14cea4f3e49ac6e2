"""`python -m engine [overrides]`: parse the command line once, run, print, exit.

The overrides are parsed once with Hydra's override parser and prepared once (search path,
plugins, task specs; engine/config/prepare.py). A single run composes and validates them once
(engine/config/compose.py) and runs (engine/outcome.py); a multirun (`-m`) goes to engine/sweep.py;
Hydra's own pages (`--cfg job`, `--info`, `--hydra-help`) to Hydra. The process environment is set
when the `engine` package is imported (engine/environment.py). Errors in user input exit with code
2 and one paragraph, never a traceback (docs/architecture.md, "The flow of one run").
"""

from __future__ import annotations

import sys

from engine.config.compose import compose_experiment
from engine.config.errors import ConfigError
from engine.config.prepare import prepare
from engine.help import help_text
from engine.outcome import fail, run_and_report
from engine.sweep import run_hydra, run_sweep
from engine.terminate import sigterm_as_interrupt

HYDRA_PAGES = ("--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--package", "-p")
# Hydra's flags that take the next word as their value (`--cfg job`, `-p hydra.launcher`); `--info` may.
VALUE_FLAGS = ("-c", "--cfg", "-p", "--package", "-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir",
               "--experimental-rerun")
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """The command line's flags (with the words they take) and its overrides, in order."""
    flags: list[str] = []
    overrides: list[str] = []
    words = iter(enumerate(argv))
    for i, word in words:
        if not word.startswith("-"):
            overrides.append(word)
            continue
        flags.append(word)
        following = argv[i + 1] if i + 1 < len(argv) else None
        if following is not None and (word in VALUE_FLAGS or (word in ("-i", "--info") and following in INFO_TOPICS)):
            flags.append(next(words)[1])
    return flags, overrides


def main() -> None:
    sigterm_as_interrupt()  # a scheduler's SIGTERM records what finished, as Ctrl-C does
    flags, args = split_flags(sys.argv[1:])
    try:
        parsed = prepare(args)  # the user's config folders and plugins first: the help page lists their names
    except ConfigError as err:
        fail(str(err))
        return
    if "--help" in flags or "-h" in flags:
        print(help_text())  # evalbench's own page; Hydra's is `--hydra-help`
        return
    if any(f in HYDRA_PAGES or f.startswith("--cfg") for f in flags):
        run_hydra([*flags, *parsed.strings()])
        return
    if "-m" in flags or "--multirun" in flags:
        run_sweep(parsed)
        return
    try:
        exp = compose_experiment(parsed)
    except ConfigError as err:
        fail(str(err))
        return
    run_and_report(exp)
