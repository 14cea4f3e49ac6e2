"""API-path speed, side by side (evalbench issue 13, targets 3, 4, 5 and 7).

One invocation runs, against the same latency-controlled OpenAI-compatible server
(benchmarks/api_server.py, a subprocess) and on the same 2,000 "What is A+B?" rows:

- a bare aiohttp client with the same number of connections: the floor;
- evalbench (`python -m engine`, the `openai/` model at `model.api_base`: the lean path), MLflow on (a
  SQLite store in the work folder, as the default command), and again with `tracking=none`;
- lm-evaluation-harness 0.4.13 (`local-chat-completions`, `--include_path` task), in its venv
  ~/.cache/evalbench/venvs/lm-eval (benchmarks/requirements-lm-eval.txt);
- inspect_ai (`openai-api` provider), in its venv ~/.cache/evalbench/venvs/inspect
  (benchmarks/requirements-inspect.txt; created on first use, `--no-setup` to skip);

at 50 ms and 200 ms latency with 64 connections (ideal 2,000 × latency ÷ 64), then a cached
re-run of evalbench and a 10,000-row evalbench run (RSS and request rate at 10/50/100%).

Per run: wall (spawn to exit); start-up (spawn to the server's first request); request phase
(first request to last response); after (last response to exit: records written); CPU per
sample (user + sys of the process, `wait4`); mean requests in flight (the server's time
integral); peak RSS (`wait4`); accuracy (1.0 proves every sample got its own answer); the ratio
of lm-eval's wall to each. The machine's cores are shared: compare ratios within one invocation.

    python benchmarks/api_speed.py                      # everything (~5 min)
    python benchmarks/api_speed.py --n 300 --skip inspect,lm-eval,scale   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = Path(os.environ.get("EVALBENCH_HOME", Path.home() / ".cache" / "evalbench")) / "venvs"
LM_EVAL_PY = VENVS / "lm-eval" / "bin" / "python"
INSPECT_PY = VENVS / "inspect" / "bin" / "python"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
       "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT),
       "INSPECT_DISPLAY": "none", "DO_NOT_TRACK": "1"}


# -- the task, for each framework ----------------------------------------------------------------------
def rows(n: int) -> list[dict[str, str]]:
    # Distinct sums: an answer given to the wrong question never scores.
    return [{"id": f"q{i:05d}", "question": f"What is {1000 + i}+{7 * i + 3}?", "answer": str(1003 + 8 * i)}
            for i in range(n)]


def write_jsonl(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(n)))
    return path


EVALBENCH_TASK = """\
# The benchmark's task: one chat turn per row, the first line of the answer against the sum.
name: api_sums
data:
  path: json
  data_files: sums.jsonl
  split: train
fields:
  id: id
  query: "{question}"
  gold: answer
formulation: generate
generate_template: "{query}"
chat: true
extract: first_line
scorers: []
primary_metric: exact_match
generation:
  max_tokens: 16
  temperature: 0.0
"""

LM_EVAL_TASK = """\
task: api_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: []
  max_gen_toks: 16
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

INSPECT_TASK = """\
from inspect_ai import Task, task
from inspect_ai.dataset import Sample, json_dataset
from inspect_ai.scorer import match
from inspect_ai.solver import generate


@task
def api_sums():
    data = json_dataset({data!r}, sample_fields=lambda r: Sample(input=r["question"], target=r["answer"], id=r["id"]))
    return Task(dataset=data, solver=[generate()], scorer=match())
"""


# -- the floor: a bare aiohttp client ---------------------------------------------------------------------
async def _floor(base: str, data: Path, connections: int) -> None:
    import aiohttp  # the floor client only

    todo = [json.loads(line) for line in data.read_text().splitlines()]
    sem = asyncio.Semaphore(connections)
    right = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def one(row: dict[str, str]) -> None:
            nonlocal right
            body = {"model": "bench", "messages": [{"role": "user", "content": row["question"]}], "max_tokens": 16,
                    "temperature": 0.0}
            async with sem, session.post(f"{base}/chat/completions", json=body) as resp:
                out = await resp.json()
            right += out["choices"][0]["message"]["content"].strip() == row["answer"]
        await asyncio.gather(*(one(r) for r in todo))
    print(json.dumps({"accuracy": right / len(todo)}))


# -- measuring one run --------------------------------------------------------------------------------------
def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


class Server:
    def __init__(self, latency: float):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "api_server.py"), "--latency", str(latency)],
                                     stdout=subprocess.PIPE, text=True, env=ENV)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            raise RuntimeError(f"the benchmark server did not start: {line!r}")
        self.root = f"http://127.0.0.1:{int(line.split()[1])}"
        self.base = self.root + "/v1"

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.root + "/_reset", method="POST"), timeout=30).read()

    def stats(self) -> dict:
        return _get(self.root + "/_stats")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def measure(server: Server, argv: list[str], n: int, cwd: Path, accuracy, env: dict | None = None,
            marks: tuple[float, ...] = ()) -> dict:
    """Run `argv` to its end; server-side times, rusage of the process, accuracy (callable)."""
    server.reset()
    log = cwd / f"log_{time.monotonic_ns()}.txt"
    samples: list[tuple[float, int, int]] = []  # (time, requests so far, RSS kB) while it runs
    # /usr/bin/time measures peak RSS and CPU: a child forked from this (larger) process would
    # report this process's RSS at fork as its own ru_maxrss.
    rusage = cwd / f"time_{time.monotonic_ns()}.txt"
    t0 = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", str(rusage), *argv], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, env=env or ENV)
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.05):
                try:
                    child = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()[0]
                    rss = int(next(line.split()[1] for line in open(f"/proc/{child}/status")
                                   if line.startswith("VmRSS")))
                    samples.append((time.time(), server.stats()["requests"], rss))
                except (OSError, StopIteration, ValueError, IndexError):
                    pass

        watcher = threading.Thread(target=watch, daemon=True)
        if marks:
            watcher.start()
        proc.wait()
        t1 = time.time()
        stop.set()
    st = server.stats()
    fields = rusage.read_text().split()[-3:]  # "Command exited with non-zero status N" may come first
    rss_kb, user, system = int(fields[0]), float(fields[1]), float(fields[2])
    res = {"wall": t1 - t0, "rc": proc.returncode, "requests": st["requests"], "cpu_ms": 1000 * (user + system) / n,
           "rss_mb": rss_kb / 1024, "in_flight": st["mean_in_flight"], "log": str(log)}
    if st["first_request"] is not None:
        res.update(startup=st["first_request"] - t0, phase=st["last_response"] - st["first_request"],
                   after=t1 - st["last_response"])
    try:
        res["accuracy"] = accuracy(log)
    except Exception as err:  # noqa: BLE001 - shown in the table, with the log to read
        res["accuracy"] = None
        res["error"] = f"{type(err).__name__}: {err}"
    if marks:
        res["marks"] = _marks(samples, n, marks, t0)
    return res


def _marks(samples: list[tuple[float, int, int]], n: int, marks: tuple[float, ...], t0: float) -> list[dict]:
    """RSS and request rate (over the stretch since the previous mark) at each fraction of n."""
    out, prev_t, prev_n = [], None, 0
    for frac in marks:
        hit = next((s for s in samples if s[1] >= frac * n), samples[-1] if samples else None)
        if hit is None:
            continue
        t, done, rss = hit
        if prev_t is None:  # the first stretch starts at the first request, not at spawn
            first = next((s for s in samples if s[1] > 0), hit)
            prev_t, prev_n = first[0], first[1]
        rate = (done - prev_n) / (t - prev_t) if t > prev_t else float("nan")
        out.append({"frac": frac, "rss_mb": rss / 1024, "rate": rate, "at_s": t - t0})
        prev_t, prev_n = t, done
    return out


# -- the frameworks --------------------------------------------------------------------------------------
def run_floor(server: Server, work: Path, data: Path, n: int, conc: int) -> dict:
    argv = [sys.executable, __file__, "_floor", server.base, str(data), str(conc)]

    def acc(log: Path) -> float:
        return json.loads(log.read_text().strip().splitlines()[-1])["accuracy"]
    return measure(server, argv, n, work, acc)


def evalbench_argv(server: Server, work: Path, conc: int, name: str, cache: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "engine", "task=api_sums", "model=litellm", "model.name=openai/bench",
            f"model.api_base={server.base}", f"harness.concurrency={conc}",
            f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}", f"cache.path={cache}", f"hydra.run.dir={work / 'runs' / name}", *extra]


def run_evalbench(server: Server, work: Path, n: int, conc: int, name: str, cache: Path, extra: list[str] = (),
                  marks: tuple[float, ...] = ()) -> dict:
    folder = work / "runs" / name / "api_sums"

    def acc(_: Path) -> float:
        rec = json.loads((folder / "experiment.json").read_text())
        assert rec["counts"]["n"] == n, rec["counts"]
        return rec["scores"]["exact_match"]["value"]
    env = {**ENV, "EVALBENCH_CONFIG_PATH": str(work / "evalbench")}
    return measure(server, evalbench_argv(server, work, conc, name, cache, list(extra)), n, work, acc, env, marks)


def run_lm_eval(server: Server, work: Path, data: Path, n: int, conc: int, name: str) -> dict:
    tasks = work / "lm_eval_tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "api_sums.yaml").write_text(LM_EVAL_TASK.format(data=json.dumps(str(data))))
    out = work / "lm_eval_out" / name
    model_args = (f"model=bench,base_url={server.base}/chat/completions,num_concurrent={conc},max_retries=3,"
                  "tokenized_requests=False,timeout=600")
    argv = [str(LM_EVAL_PY), "-m", "lm_eval", "run", "--model", "local-chat-completions", "--model_args", model_args,
            "--tasks", "api_sums", "--include_path", str(tasks), "--apply_chat_template", "--batch_size", "1",
            "--output_path", str(out)]

    def acc(_: Path) -> float:
        result = json.loads(max(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime).read_text())
        return result["results"]["api_sums"]["exact_match,none"]
    return measure(server, argv, n, work, acc)


def run_inspect(server: Server, work: Path, data: Path, n: int, conc: int, name: str) -> dict:
    task = work / "inspect_api_sums.py"
    task.write_text(INSPECT_TASK.format(data=str(data)))
    logs = work / "inspect_logs" / name
    # The task file relative to the working folder: inspect globs it, and refuses absolute patterns.
    argv = [str(INSPECT_PY), "-m", "inspect_ai", "eval", task.name, "--model", "openai-api/bench/bench",
            "--model-base-url", server.base, "--max-connections", str(conc), "--max-tokens", "16",
            "--temperature", "0", "--log-dir", str(logs), "--log-format", "json", "--display", "none"]
    env = {**ENV, "BENCH_API_KEY": "not-needed"}

    def acc(_: Path) -> float:
        log = json.loads(max(logs.glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())
        return log["results"]["scores"][0]["metrics"]["accuracy"]["value"]
    return measure(server, argv, n, work, acc, env)


def setup_inspect() -> bool:
    if INSPECT_PY.exists():
        return True
    print(f"[api_speed] creating {INSPECT_PY.parent.parent} (benchmarks/requirements-inspect.txt) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(INSPECT_PY.parent.parent)], check=True)
    done = subprocess.run([str(INSPECT_PY), "-m", "pip", "install", "--quiet", "-r",
                           str(HERE / "requirements-inspect.txt")])
    return done.returncode == 0


# -- the table ----------------------------------------------------------------------------------------------
def import_floor() -> float:
    """Wall of a process that only starts Python and imports evalbench's CLI (best of 3): no cached
    re-run of `python -m engine` can be faster, whatever the cache does."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import engine.cli"], env=ENV, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(title: str, results: dict[str, dict], ideal: float) -> None:
    ref = results.get("lm-eval", {}).get("wall")
    print(f"\n## {title} (ideal request phase {ideal:.2f} s)")
    print(f"{'run':<22} {'wall s':>7} {'start':>6} {'phase':>6} {'after':>6} {'CPU ms/s':>9} {'in flight':>9} "
          f"{'RSS MB':>7} {'acc':>6} {'lm-eval/x':>9}")
    for name, r in results.items():
        ratio = f"{ref / r['wall']:.2f}x" if ref else "—"
        print(f"{name:<22} {r['wall']:>7.2f} {_fmt(r.get('startup'), '6.2f')} {_fmt(r.get('phase'), '6.2f')} "
              f"{_fmt(r.get('after'), '6.2f')} {r['cpu_ms']:>9.2f} {r['in_flight']:>9.1f} {r['rss_mb']:>7.0f} "
              f"{_fmt(r.get('accuracy'), '6.3f')} {ratio:>9}")
        if r.get("error") or r["rc"] not in (0, None):
            print(f"    ! exit {r['rc']}, {r.get('error', '')} (log: {r['log']})")


def check(label: str, ok: bool, detail: str) -> bool:
    print(f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}")
    return ok


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_floor":
        asyncio.run(_floor(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--scale-n", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latencies", default="0.05,0.2")
    ap.add_argument("--skip", default="", help="comma list of: floor, lm-eval, inspect, cached, untracked, scale")
    ap.add_argument("--no-setup", action="store_true", help="do not create the inspect venv when missing")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, run folders)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if "inspect" not in skip and not INSPECT_PY.exists() and (args.no_setup or not setup_inspect()):
        print("[api_speed] inspect_ai is not installed: its rows are skipped", file=sys.stderr)
        skip.add("inspect")
    if "lm-eval" not in skip and not LM_EVAL_PY.exists():
        print(f"[api_speed] no {LM_EVAL_PY} (python -m engine.external.venvs lm_eval): lm-eval rows skipped",
              file=sys.stderr)
        skip.add("lm-eval")
    work = Path(tempfile.mkdtemp(prefix="evalbench-api-speed-"))
    (work / "evalbench" / "task").mkdir(parents=True)
    (work / "evalbench" / "task" / "api_sums.yaml").write_text(EVALBENCH_TASK)
    data = write_jsonl(work / "evalbench" / "task" / "sums.jsonl", args.n)
    n, conc, ok = args.n, args.concurrency, True
    print(f"# API path: {n} requests, {conc} connections; work folder {work}")
    for lat in [float(x) for x in args.latencies.split(",")]:
        server = Server(lat)
        ideal = n * lat / conc
        try:
            res: dict[str, dict] = {}
            tag = f"{int(lat * 1000)}ms"
            if "floor" not in skip:
                res["floor (aiohttp)"] = run_floor(server, work, data, n, conc)
            cache = work / f"cache_{tag}.sqlite"
            res["evalbench"] = run_evalbench(server, work, n, conc, f"eb_{tag}", cache)  # MLflow on (SQLite)
            if "untracked" not in skip:
                res["evalbench, tracking=none"] = run_evalbench(server, work, n, conc, f"eb_{tag}_none",
                                                                work / f"cache_{tag}_none.sqlite", ["tracking=none"])
            if "cached" not in skip:
                res["evalbench, cached"] = run_evalbench(server, work, n, conc, f"eb_{tag}_cached", cache)
            if "lm-eval" not in skip:
                res["lm-eval"] = run_lm_eval(server, work, data, n, conc, tag)
            if "inspect" not in skip:
                res["inspect_ai"] = run_inspect(server, work, data, n, conc, tag)
            table(f"{n} requests at {lat * 1000:.0f} ms, {conc} connections", res, ideal)
            eb = res["evalbench"]
            ok &= check("accuracy", eb.get("accuracy") == 1.0, f"{eb.get('accuracy')}")
            if lat <= 0.05:
                ok &= check("wall <= 5 s", eb["wall"] <= 5.0, f"{eb['wall']:.2f} s")
                if "floor (aiohttp)" in res:  # issue 26 item 6: MLflow off the critical path
                    ratio = eb["wall"] / res["floor (aiohttp)"]["wall"]
                    ok &= check("MLflow on <= 1.6x the bare client", ratio <= 1.6, f"{ratio:.2f}x")
                if "lm-eval" in res:
                    ok &= check(">= 3.5x faster than lm-eval", res["lm-eval"]["wall"] / eb["wall"] >= 3.5,
                                f"{res['lm-eval']['wall'] / eb['wall']:.2f}x")
                # The request path alone is the tracking=none row; the MLflow row adds its helper process,
                # which shares the two cores with the run and the server while it imports MLflow.
                rp = res.get("evalbench, tracking=none", eb)
                ok &= check("request phase <= 1.2x ideal (request path)", rp.get("phase", 1e9) <= 1.2 * ideal,
                            f"{rp.get('phase', float('nan')):.2f} s = {rp.get('phase', float('nan')) / ideal:.2f}x; "
                            f"MLflow on {eb.get('phase', float('nan')) / ideal:.2f}x")
                ok &= check("CPU <= 2 ms per sample (request path)", rp["cpu_ms"] <= 2.0,
                            f"{rp['cpu_ms']:.2f} ms; with MLflow's helper {eb['cpu_ms']:.2f} ms")
                ok &= check(">= 55 in flight (request path)", rp["in_flight"] >= 55,
                            f"{rp['in_flight']:.1f}; MLflow on {eb['in_flight']:.1f}")
                ok &= check("start-up <= 2 s", eb.get("startup", 1e9) <= 2.0, f"{eb.get('startup', float('nan')):.2f} s")
                ok &= check("records <= 1 s after the last response", eb.get("after", 1e9) <= 1.0,
                            f"{eb.get('after', float('nan')):.2f} s")
            else:
                ok &= check("wall <= 8 s", eb["wall"] <= 8.0, f"{eb['wall']:.2f} s")
            if "evalbench, cached" in res:
                c = res["evalbench, cached"]
                floor = import_floor()
                # Retired target (issue 26): a re-run costs Python's start-up, the import and, with MLflow on,
                # MLflow's import in its helper; printed, not checked.
                print(f"  [info] cached re-run (MLflow on): "
                      f"{c['wall']:.2f} s = {100 * c['wall'] / eb['wall']:.1f}%, {c['requests']} requests; "
                      f"Python + `import engine.cli` alone take {floor:.2f} s = "
                      f"{100 * floor / eb['wall']:.1f}%")
            if "scale" not in skip and lat == 0.05:
                big = work / "evalbench_big"
                (big / "task").mkdir(parents=True, exist_ok=True)
                (big / "task" / "api_sums.yaml").write_text(EVALBENCH_TASK)
                write_jsonl(big / "task" / "sums.jsonl", args.scale_n)
                env_work = work / "scale"
                env_work.mkdir(exist_ok=True)
                (env_work / "evalbench").symlink_to(big)
                r = run_evalbench(server, env_work, args.scale_n, conc, "scale", work / "cache_scale.sqlite",
                                  marks=(0.1, 0.5, 1.0))
                print(f"\n## scale: {args.scale_n} requests at 50 ms (ideal {args.scale_n * lat / conc:.2f} s): "
                      f"wall {r['wall']:.2f} s, accuracy {r.get('accuracy')}, peak RSS {r['rss_mb']:.0f} MB, "
                      f"in flight {r['in_flight']:.1f}")
                for m in r["marks"]:
                    print(f"  at {m['frac'] * 100:>3.0f}%: RSS {m['rss_mb']:6.0f} MB, {m['rate']:7.0f} requests/s "
                          f"since the previous mark (t={m['at_s']:.1f} s)")
        finally:
            server.stop()
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)])
    print("\nall evalbench targets met" if ok else "\nsome evalbench targets missed (FAIL above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
