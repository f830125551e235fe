"""Contention on 2 CPU cores: is a run slowed by its own DataLoader worker, and by a second run beside it?

Each measurement starts real `ppkt pretrain` runs (the demo config, 2 torch threads) in fresh processes, so the
OpenMP wait policy (an environment variable read when the OpenMP runtime starts) can differ between them:
  (a) own workers: the wall time per iteration (`iteration_s` in metrics.jsonl) with train.workers=1 (the next
      batch prepared in a worker process during the step) over the same with train.workers=0 (data prepared in
      the training process, between steps) -- at most 1.0 means the run is not slowed by its own worker. Also
      reported: the compute time of an iteration (`step_s`) with and without the worker; it grows by about
      the worker's CPU time per batch, which runs on the same 2 cores during the step (a fair share, not a
      collapse: under a spinning OpenMP policy the step grew several times over);
  (b) two runs: the wall time per iteration of two identical runs started together over that of one run alone
      -- sharing 2 cores fairly gives 2.0.
for OMP_WAIT_POLICY=ACTIVE (spinning threads, libgomp's behaviour when unset before ppkt set it) and PASSIVE
(what ppkt's command sets unless the variable is already set).

    python benchmarks/bench_contention.py [--iterations 30] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start(out: Path, policy: str, workers: int, iterations: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ppkt.cli", "pretrain", "--config", str(ROOT / "configs" / "pretrain_demo.yaml"),
           f"train.out_dir={out}", f"train.iterations={iterations}", f"train.workers={workers}", "train.threads=2",
           "train.log_every=1", f"train.checkpoint_every={iterations}"]
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a benchmark run failed:\n{err[-2000:]}")


def per_iteration(out: Path, key: str, skip: int = 3) -> float:
    """Median of `key` over the logged iterations after the first `skip` (warm-up)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r[key] for r in records[skip:])


def wall_per_iteration(out: Path, skip: int = 3) -> float:
    """Median seconds between consecutive logged iterations after warm-up (1 / iterations per second)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["iteration_s"] for r in records[skip:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--json", default=None, metavar="FILE")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for policy in ("ACTIVE", "PASSIVE"):
            runs = {}
            for workers in (0, 1):
                out = tmp / f"{policy}_w{workers}"
                finish(start(out, policy, workers, args.iterations))
                runs[workers] = out
            pair = [tmp / f"{policy}_pair{i}" for i in (0, 1)]
            t0 = time.perf_counter()
            procs = [start(out, policy, 1, args.iterations) for out in pair]
            for proc in procs:
                finish(proc)
            alone = wall_per_iteration(runs[1])
            results[policy] = {
                "step_s_workers0": per_iteration(runs[0], "step_s"),
                "step_s_workers1": per_iteration(runs[1], "step_s"),
                "data_s_workers0": per_iteration(runs[0], "data_s"),
                "data_s_workers1": per_iteration(runs[1], "data_s"),
                "step_ratio": per_iteration(runs[1], "step_s") / per_iteration(runs[0], "step_s"),
                "iteration_s_workers0": wall_per_iteration(runs[0]),
                "own_worker_ratio": wall_per_iteration(runs[1]) / wall_per_iteration(runs[0]),
                "iteration_s_alone": alone,
                "iteration_s_beside_another": [wall_per_iteration(out) for out in pair],
                "two_runs_ratio": max(wall_per_iteration(out) for out in pair) / alone,
                "pair_wall_s": time.perf_counter() - t0,
            }
    print(f"{'OMP_WAIT_POLICY':<16} {'step w0 s':>10} {'step w1 s':>10} {'it w0 s':>8} {'it w1 s':>8} {'(a) ratio':>10} "
          f"{'paired s/it':>12} {'(b) ratio':>10}")
    for policy, r in results.items():
        print(f"{policy:<16} {r['step_s_workers0']:>10.3f} {r['step_s_workers1']:>10.3f} {r['iteration_s_workers0']:>8.3f} "
              f"{r['iteration_s_alone']:>8.3f} {r['own_worker_ratio']:>10.2f} {max(r['iteration_s_beside_another']):>12.3f} "
              f"{r['two_runs_ratio']:>10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
