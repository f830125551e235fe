"""`make bench`: run every speed benchmark on this machine and write docs/benchmarks.md.

Runs, each in its own process, with medians of repeated runs inside each process:
  bench_sparse_unet.py  SR-UNet34 forward+backward, today's CPU convolution path vs the previous one, efficiency;
  bench_pretrain.py     the demo and the paper-like config at batch 2: data, teacher, student, loss, optimiser;
                        the teacher-cache speed-up;
  bench_contention.py   a run beside its own DataLoader worker, and two runs side by side (OMP wait policies);
  fine-tuning (configs/finetune_synthetic.yaml on a 12-scene synthetic world): data time per batch vs step time;
  a 500-iteration demo pretraining run: resident memory at iteration 50 and 500 (must stay flat).
Measure on a quiet machine: a second CPU-heavy process slows sparse convolution several times over.

    python benchmarks/report.py [--out docs/benchmarks.md] [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list, what: str) -> None:
    print(f"== {what}: {' '.join(str(a) for a in args)}", flush=True)
    subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, check=True)


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?") if Path("/proc/cpuinfo").is_file() else "?"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{datetime.date.today()}, ppkt commit {commit or '?'}; {cpu}, {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}, torch {torch.__version__}; "
            f"load average {load:.2f} at the start; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def memory_run(tmp: Path, iterations: int) -> dict:
    out = tmp / "long"
    run(["-m", "ppkt.cli", "pretrain", "--config", ROOT / "configs" / "pretrain_demo.yaml", f"train.out_dir={out}",
         f"train.iterations={iterations}", "train.log_every=50", f"train.checkpoint_every={iterations}"],
        f"memory over {iterations} iterations")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["iteration"]: r["rss_mib"] for r in records}


def finetune_data(tmp: Path, iterations: int) -> dict:
    """Fine-tuning with the default config (configs/finetune_synthetic.yaml) on a small synthetic world, with the data
    prepared in the training process (workers=0) and in 1 worker (the default): median data and step seconds."""
    world = tmp / "world"
    run(["-m", "ppkt.cli", "synth", "--out", world, "--scenes", "12", "--frames-per-scene", "2"], "a small synthetic world")
    out = {}
    for workers in (0, 1):
        run_dir = tmp / f"finetune_w{workers}"
        run(["-m", "ppkt.cli", "finetune", "--config", ROOT / "configs" / "finetune_synthetic.yaml", f"data.root={world}",
             f"data.classes={world / 'classes.json'}", f"train.out_dir={run_dir}", f"train.iterations={iterations}",
             "train.log_every=1", "train.eval_every=100000", "train.eval_ply=false", f"train.workers={workers}"],
            f"fine-tuning data time, {workers} worker(s)")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        records = [r for r in records if "step_s" in r][3:]  # after warm-up
        out[f"workers{workers}"] = {key: statistics.median(r[key] for r in records) for key in ("data_s", "step_s")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--quick", action="store_true", help="fewer repeats and a 100-iteration memory run (a smoke test)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        head = machine()
        repeats = ["--repeats", "2"] if args.quick else []
        run([ROOT / "benchmarks" / "bench_sparse_unet.py", "--json", tmp / "conv.json", *repeats], "sparse convolution")
        run([ROOT / "benchmarks" / "bench_pretrain.py", "--cache", "--json", tmp / "pretrain.json",
             *(["--iterations", "3"] if args.quick else [])], "pretraining iterations")
        run([ROOT / "benchmarks" / "bench_contention.py", "--json", tmp / "contention.json",
             *(["--iterations", "8"] if args.quick else [])], "contention")
        finetune = finetune_data(tmp, 12 if args.quick else 40)
        rss = memory_run(tmp, 100 if args.quick else 500)
        results = {name: json.loads((tmp / f"{name}.json").read_text()) for name in ("conv", "pretrain", "contention")}
    results["rss_mib"], results["finetune_data"] = rss, finetune
    text = render(head, results)
    Path(args.out).write_text(text)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(results, indent=2) + "\n")
    print(text)


def render(head: str, r: dict) -> str:
    lines = ["# Benchmarks", "", f"Written by `make bench` (benchmarks/report.py): {head}.", ""]
    lines += render_pretrain(r["pretrain"]) + render_data(r) + render_conv(r["conv"]) + render_contention(r["contention"])
    rss = {int(k): v for k, v in r["rss_mib"].items()}
    last = max(rss)
    mid = 50 if 50 in rss and last > 50 else min(rss)
    lines += ["## Memory over a long run", "",
              f"Demo pretraining (`configs/pretrain_demo.yaml`), resident memory of the training process: "
              f"{rss[mid]:.0f} MiB at iteration {mid}, {rss[last]:.0f} MiB at iteration {last} "
              f"({rss[last] - rss[mid]:+.0f} MiB; {rss[min(rss)]:.0f} MiB after the first iteration).", ""]
    return "\n".join(lines)


def render_pretrain(p: dict) -> list:
    lines = ["## Pretraining iterations", "",
             "Median seconds per iteration (2 threads, one process: the data is prepared between steps here; a run with "
             "`train.workers >= 1` prepares it in a worker during the step).", "",
             "| config | voxels | data | teacher | student fwd+bwd | loss | optimiser | step | frames/s | peak RSS | "
             "cached teacher step | cache speed-up |", "|" + " --- |" * 12]
    for name, s in p["settings"].items():
        cache = f"{s['cached_step_s']:.3f} | x{s['step_s'] / s['cached_step_s']:.2f}" if "cached_step_s" in s else "n/a | n/a"
        lines.append(f"| {name} | {s['voxels']} | {s['data_s']:.3f} | {s['teacher_s']:.3f} | {s['student_s']:.3f} | "
                     f"{s['loss_s']:.3f} | {s['optimiser_s']:.3f} | {s['step_s']:.3f} | {s['frames_per_s']:.2f} | "
                     f"{s['peak_rss_gib']:.2f} GiB | {cache} |")
    return lines + [""]


def render_data(r: dict) -> list:
    """Data time per batch over step time: prepared in the training process, and waited for with 1 worker."""
    demo = next(iter(r["pretrain"]["settings"].values()))
    passive, ft = r["contention"]["PASSIVE"], r["finetune_data"]
    rows = [("pretraining, demo config", demo["data_s"], demo["step_s"], passive["data_s_workers1"], passive["step_s_workers1"]),
            ("fine-tuning, configs/finetune_synthetic.yaml", ft["workers0"]["data_s"], ft["workers0"]["step_s"],
             ft["workers1"]["data_s"], ft["workers1"]["step_s"])]
    lines = ["## Data time per batch", "",
             "Median seconds per batch. In the training process: the time to prepare a batch there (`train.workers=0`; "
             "for pretraining, from the table above). With 1 worker (the default configs): the time the training loop "
             "waits for the next batch (`data_s` in metrics.jsonl), over the step time of that run. Target: at most 25 %.",
             "", "| run | data, in-process (s) | step (s) | ratio | wait, 1 worker (s) | step (s) | ratio |",
             "|" + " --- |" * 7]
    for name, d0, s0, d1, s1 in rows:
        lines.append(f"| {name} | {d0:.3f} | {s0:.3f} | {100 * d0 / s0:.0f} % | {d1:.3f} | {s1:.3f} | {100 * d1 / s1:.1f} % |")
    return lines + [""]


def render_conv(c: dict) -> list:
    return ["## Sparse convolution on CPU", "", "```", c.get("table", json.dumps(c, indent=2)), "```", ""]


def render_contention(c: dict) -> list:
    lines = ["## Contention on the 2 cores", "",
             "(a) wall time per iteration of a run with 1 DataLoader worker preparing the next batch during the step, "
             "over the same run with the data prepared in the training process (at most 1.0: not slowed by its own "
             "worker); the step itself (forward, backward, optimiser) grows by about the worker's CPU time, which "
             "shares the 2 cores. (b) time per iteration of two identical runs side by side, over one alone (2.0: a "
             "fair share of the cores; target at most 2.5). Demo config, 2 threads each.", "",
             "| OMP_WAIT_POLICY | step, no worker (s) | step, 1 worker (s) | s/it, no worker | s/it, 1 worker | (a) "
             "| s/it beside another run | (b) |",
             "|" + " --- |" * 8]
    for policy, x in c.items():
        lines.append(f"| {policy} | {x['step_s_workers0']:.3f} | {x['step_s_workers1']:.3f} | "
                     f"{x['iteration_s_workers0']:.3f} | {x['iteration_s_alone']:.3f} | {x['own_worker_ratio']:.2f} | "
                     f"{max(x['iteration_s_beside_another']):.3f} | {x['two_runs_ratio']:.2f} |")
    return lines + [""]


if __name__ == "__main__":
    main()
