"""Scale check of engine.compare: two runs of 100,000 questions each (synthetic run folders).

    python benchmarks/compare_scale.py [--n 100000] [--tasks 4] [--keep DIR]

Prints the time to write, load (parse instances.jsonl), compare (align + paired stats per task and
suite), and to answer viewer queries (filter, sort, search, one page, one detail).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.compare import compare_runs, find_run_dirs, load_run
from engine.compare.query import QueryIndex
from engine.compare.synthetic import write_run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000, help="questions per side (split across tasks)")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--keep", type=Path, help="write the run folders here and keep them")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="compare_scale_"))
    rng = np.random.default_rng(0)
    per = args.n // args.tasks
    t0 = time.perf_counter()
    for t in range(args.tasks):
        base = (rng.random(per) < 0.5).astype(float)
        new = base.copy()
        new[rng.random(per) < 0.05] = 1.0
        spec = f"task{t}:mc"
        write_run(root / "A" / spec.replace(":", "__"), task_spec=spec, correct=new, model="big", step=2000,
                  suite="scale", errored=[f"q{7:06d}"], seed=t, fast=True)
        write_run(root / "B" / spec.replace(":", "__"), task_spec=spec, correct=base, model="big", step=1000,
                  suite="scale", seed=100 + t, fast=True)
    t_write = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in root.rglob("instances.jsonl")) / 2**20

    t0 = time.perf_counter()
    runs_a = [load_run(d) for d in find_run_dirs(root / "A")]
    runs_b = [load_run(d) for d in find_run_dirs(root / "B")]
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    cmp = compare_runs(runs_a, runs_b)
    t_compare = time.perf_counter() - t0

    qi = QueryIndex(cmp.table)
    t0 = time.perf_counter()
    idx = qi.select(None, "regressed", sort="delta")
    qi.page(idx, 1, 50)
    t_filter = time.perf_counter() - t0
    t0 = time.perf_counter()
    qi.page(qi.select(None, "all", sort="-score_a"), 1000, 50)
    t_sort = time.perf_counter() - t0
    t0 = time.perf_counter()
    hits = qi.select(None, "all", q="q004242")
    t_search_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    qi.select(None, "all", q="which letter is b")
    t_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    qi.detail(int(hits[0]))
    t_detail = time.perf_counter() - t0
    # The viewer's HTTP API over the same comparison (loopback).
    import urllib.request

    from engine.compare.server import ViewerState, start_in_thread

    server, url = start_in_thread(ViewerState(comparison=cmp))
    http: dict[str, float] = {}
    for name, path in (("overview", "api/overview"), ("page 1", "api/questions?page=1&per_page=50"),
                       ("regressed, Δ sort", "api/questions?filter=regressed&sort=delta"),
                       ("search", "api/questions?q=which+letter+is+c"), ("detail", "api/question?row=54321"),
                       ("CSV of regressed", "export/questions.csv?filter=regressed")):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url + path, timeout=60) as r:  # loopback
            r.read()
        http[name] = time.perf_counter() - t0
    server.shutdown()
    server.server_close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    n_rows = len(cmp.table)
    print(f"questions per side      {args.n:,} in {args.tasks} tasks ({size:.0f} MiB of instances.jsonl, both sides)")
    print(f"write (synthetic)       {t_write:6.2f} s")
    print(f"load both runs          {t_load:6.2f} s   (parse + per-question aggregation)")
    print(f"compare                 {t_compare:6.2f} s   (align {n_rows:,} rows, paired stats per task + suite)")
    print(f"load + compare          {t_load + t_compare:6.2f} s")
    print(f"filter regressed+sort   {t_filter * 1000:6.0f} ms  (first page)")
    print(f"sort all, page 1000     {t_sort * 1000:6.0f} ms")
    print(f"first text search       {t_search_first * 1000:6.0f} ms  (builds the search corpus once)")
    print(f"next text search        {t_search * 1000:6.0f} ms")
    print(f"question detail         {t_detail * 1000:6.1f} ms")
    for name, sec in http.items():
        print(f"HTTP {name:<19}{sec * 1000:6.0f} ms")
    print(f"peak RSS                {rss:6.0f} MiB")
    if cmp.report.suite:
        s = cmp.report.suite
        print(f"suite Δ {s.delta:+.4f} ± {1.96 * s.stderr:.4f} (MDE {s.mde:.4f}) → {s.verdict}")
    if args.keep is None:
        shutil.rmtree(root)
    return 0 if t_compare < 2.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
