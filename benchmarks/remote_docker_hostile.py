"""The hostile-code suite on a remote Docker daemon gives the same results as on the local one.

    python benchmarks/remote_docker_hostile.py [--port 2376] [--skip-both]

Starts the second dockerd of scripts/ci/second_docker.sh (idempotent; tcp://127.0.0.1:<port>),
then runs every case of tests/sandbox/test_sandbox_hostile.py and tests/sandbox/
test_forged_verdicts.py, with the suite's own assertions (its test functions are called, the
cases imported, not copied), against three docker pools in turn:

- local:  a plain docker pool on the local daemon (what the suite runs);
- remote: a pool whose only host is tcp://127.0.0.1:<port>;
- both:   a pool over both daemons (the executions must be spread over the two).

Prints one row per case (local and remote outcome and verdict, equal?), "N cases, M equal", the
wall time of each run, and the executions per host of the two-host run. A case whose outcome
differs although both are accepted by the suite (a timing race on a loaded machine) is rerun a few
times on each daemon (see ``rerun_races``). Exit 1 when a case differs between local and remote,
fails the suite's assertions, or the two-host run did not use both hosts. Root is needed for the cases the suite runs only as root (kill(-1)).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "sandbox")]

import pytest  # the suite's skip() raises pytest's Skipped
import sandbox_testlib  # type: ignore[import-not-found]  # sets the secret before any sandbox starts
import test_forged_verdicts as forged  # type: ignore[import-not-found]
import test_sandbox_hostile as hostile  # type: ignore[import-not-found]

from engine.sandbox import Demand, ExecResult, SandboxPoolConfig, SandboxRouter
from engine.sandbox.base import Sandbox
from engine.sandbox.docker_backend import client
from engine.sandbox.models import DockerHost
from engine.scoring.code_exec import CodeVerdict, HumanEvalProblem

LOCAL_SOCK = "unix:///var/run/docker.sock"


def leftovers_on_host(sb: Sandbox) -> list[str]:
    """The suite's ``leftovers`` for docker, asked of the daemon the sandbox runs on."""
    top = client(getattr(sb, "host", None)).api.top(sb.container_id, ps_args="-o pid,stat,args")  # type: ignore[attr-defined]
    stat, cmd = top["Titles"].index("STAT"), top["Titles"].index("COMMAND")
    return [" ".join(p) for p in top["Processes"] if "Z" not in p[stat]
            and "docker-init" not in p[cmd] and p[cmd] != "sleep infinity"]


class Row:
    def __init__(self, status: str, verdict: str, host: str) -> None:
        self.status, self.verdict, self.host = status, verdict, host


def _verdict(fn: Callable[[], None]) -> str:
    try:
        fn()
    except pytest.skip.Exception as e:
        return f"skip: {e}"
    except AssertionError as e:
        return "FAIL: " + " ".join(str(e).split())[:120]
    return "pass"


def run_hostile(mode: str, hosts: tuple[str, ...], only: set[str] | None = None) -> dict[str, Row]:
    """Every case of test_sandbox_hostile (or ``only`` these) through its own test function.

    Each case takes two loans (its session, then the fresh-work-dir check) and the pool breaks
    ties by least served: on two hosts the sessions would all land on the first one. One no-op
    execution before every other case makes them alternate.
    """
    rows: dict[str, Row] = {}
    seen: list[ExecResult] = []
    orig_outcome = hostile._outcome

    def outcome(r: ExecResult) -> str:  # the test calls it first with the case's result
        seen.append(r)
        return orig_outcome(r)

    hostile._outcome = outcome
    hostile.leftovers = leftovers_on_host
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    pool = SandboxPoolConfig(name=f"hostile-{mode}", backend="docker", limits=hostile.LIMITS,
                             instances=max(1, len(hosts)), docker_hosts=tuple(DockerHost(url=h) for h in hosts))
    router = run(SandboxRouter([pool]).__aenter__())
    listener = hostile.Listener()
    try:
        for i, case in enumerate(c for c in hostile.CASES if only is None or c.id in only):
            seen.clear()
            if len(hosts) > 1 and i % 2:
                run(router.exec(["python"], ["true"]))
            with tempfile.TemporaryDirectory() as tmp:
                v = _verdict(lambda c=case, d=tmp: hostile.test_hostile(  # type: ignore[misc]
                    c, "docker", run, {"docker": router}, listener, Path(d)))
            r = seen[0] if seen else None
            rows[case.id] = Row(orig_outcome(r) if r else "?", v, r.host if r else "?")
    finally:
        run(router.__aexit__(None, None, None))
        listener.close()
        loop.close()
        hostile._outcome = orig_outcome
    return rows


def run_forged(mode: str, hosts: tuple[str, ...]) -> dict[str, Row]:
    """Every case of test_forged_verdicts that runs code, through its own test functions."""
    last: list[CodeVerdict] = []

    def check_all(backend: str, items: list[tuple[HumanEvalProblem, str]]) -> list[CodeVerdict]:
        async def go() -> list[CodeVerdict]:
            pool = SandboxPoolConfig(name=f"forge-{mode}", backend="docker", instances=2,
                                     docker_hosts=tuple(DockerHost(url=h) for h in hosts))
            async with SandboxRouter([pool], demands=[Demand(requires=frozenset({"python"}), instances=len(items))]) as r:
                return list(await asyncio.gather(*(forged.run_humaneval_check(r, p, c, forged.TIMEOUT)
                                                   for p, c in items)))
        out = asyncio.run(go())
        last[:] = out
        return out

    forged._check_all = check_all
    rows: dict[str, Row] = {}
    for case in forged.HOSTILE:
        v = _verdict(lambda c=case: forged.test_hostile_completion_cannot_forge_a_pass(c, mode))  # type: ignore[misc]
        cv = forged._HOSTILE_CACHE[mode].get(case)
        rows[f"forge:{case}"] = (Row(cv.status, v, cv.execution.host if cv.execution else "?") if cv
                                 else Row("-", v, "-"))
    for name, test in (("forge:checker_out_of_reach", forged.test_the_checker_is_out_of_reach_of_the_candidate_process),
                       ("forge:honest_pass_wrong_fail", forged.test_honest_solutions_pass_and_wrong_ones_fail)):
        v = _verdict(lambda: test(mode))  # noqa: B023 - called at once
        status = ",".join(f"{s}x{n}" for s, n in sorted(Counter(c.status for c in last).items()))
        rows[name] = Row(status, v, ",".join(c.execution.host for c in last if c.execution))
    return rows


def run_mode(mode: str, hosts: tuple[str, ...]) -> tuple[dict[str, Row], float]:
    t0 = time.monotonic()
    rows = run_hostile(mode, hosts) | run_forged(mode, hosts)
    return rows, time.monotonic() - t0


RERUNS = 3


def rerun_races(cases: set[str], remote: str, local: dict[str, Row],
                rem: dict[str, Row]) -> dict[str, tuple[set[str], set[str]]]:
    """Outcomes seen on each daemon over a few more runs of the cases whose outcome differed.

    Some cases accept several outcomes (e.g. cpu_spin_threads: RLIMIT_CPU or the wall clock,
    whichever fires first on a loaded machine): a differing run counts as a race, not a
    difference of the daemons, when every rerun passes the suite's assertions and the two
    daemons have produced a common outcome (the table shows both sets).
    """
    seen = {c: ({local[c].status}, {rem[c].status}) for c in cases}
    for _ in range(RERUNS if cases else 0):
        for i, hosts in enumerate(((), (remote,))):
            for c, r in run_hostile("rerun", hosts, only=cases).items():
                seen[c][i].add(r.status if r.verdict == "pass" else "FAIL")
    return seen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=2376)
    ap.add_argument("--skip-both", action="store_true", help="do not run the two-host pool")
    args = ap.parse_args()
    env = dict(os.environ, EVALBENCH_DOCKER2_PORT=str(args.port))
    remote = subprocess.run(["bash", str(ROOT / "scripts/ci/second_docker.sh")], env=env, check=True,
                            capture_output=True, text=True).stdout.strip().splitlines()[-1]
    reason = sandbox_testlib.backend_skip_reason("docker")
    if reason:
        raise SystemExit(f"local docker: {reason}")

    local, t_local = run_mode("local", ())
    rem, t_remote = run_mode("remote", (remote,))
    races = {k for k, a in local.items() if a.verdict == rem[k].verdict == "pass"
             and a.status != rem[k].status and not k.startswith("forge:")}
    seen = rerun_races(races, remote, local, rem)
    w = max(map(len, local)) + 1
    print(f"{'case':<{w}} {'local':<22} {'remote':<22} equal")
    equal = 0
    bad: list[str] = []
    for case, a in local.items():
        b = rem[case]
        same = (a.status, a.verdict) == (b.status, b.verdict)
        note = "yes" if same else "NO"
        if case in seen:  # a race, not a difference, when the daemons share an outcome
            same = bool(seen[case][0] & seen[case][1]) and "FAIL" not in seen[case][0] | seen[case][1]
            note = (f"{'yes' if same else 'NO'} (race; {RERUNS + 1} runs each: local "
                    f"{sorted(seen[case][0])}, remote {sorted(seen[case][1])})")
        equal += same
        print(f"{case:<{w}} {a.status + '/' + a.verdict[:14]:<22} {b.status + '/' + b.verdict[:14]:<22} "
              f"{note}")
        for where, r in (("local", a), ("remote", b)):
            if r.verdict != "pass":
                bad.append(f"{case} on {where}: {r.verdict}")
    print(f"{len(local)} cases, {equal} equal")
    print(f"wall time: local {t_local:.1f} s, remote ({remote}) {t_remote:.1f} s")
    hosts_ok = True
    if not args.skip_both:
        both, t_both = run_mode("both", (LOCAL_SOCK, remote))
        spread = Counter(r.host for k, r in both.items() if not k.startswith("forge:"))
        forge_spread: Counter[str] = Counter()
        for k, r in both.items():
            if k.startswith("forge:") and r.host not in ("-", "?"):
                forge_spread.update(r.host.split(","))
        both_pass = sum(r.verdict == "pass" for r in both.values())
        print(f"both hosts in one pool: {both_pass}/{len(both)} cases pass the suite's assertions, "
              f"wall time {t_both:.1f} s")
        print(f"  hostile executions per host: {dict(spread)}")
        print(f"  forged-verdict executions per host: {dict(forge_spread)}")
        hosts_ok = all(spread.get(h) for h in (LOCAL_SOCK, remote)) and both_pass == len(both)
        bad += [f"{k} on both: {r.verdict}" for k, r in both.items() if r.verdict != "pass"]
    for line in bad:
        print("  " + line)
    return 0 if equal == len(local) and not bad and hosts_ok else 1


if __name__ == "__main__":
    sys.exit(main())
