"""The confirmatory segmentation benchmark (configs/protocols/segmentation.yaml; ppkt/benchmark/confirm.py).

    python benchmarks/segmentation.py run --until curves   # worlds, pretraining runs, learning curves + pilots on val
    python benchmarks/segmentation.py run --until confirm  # then the confirmatory pairs on the test world and floors
                                                           # (needs the protocol fixed and committed)
    python benchmarks/segmentation.py report               # the pages again, from results.json
    python benchmarks/segmentation.py rerun ID             # one record from nothing, its score beside the recorded one

Every stage resumes: a finished run is a record of <out>/results.json, reused while its settings are unchanged.
"""
from __future__ import annotations

import ppkt  # noqa: F401  (first: the OpenMP wait policy before torch loads)

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from ppkt.benchmark.confirm import rerun, run
    from ppkt.benchmark.confirm_report import write_confirm_page, write_tuning_page
    from ppkt.benchmark.protocol import load_protocol
    from ppkt.benchmark.results import Results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "report", "rerun"))
    p.add_argument("id", nargs="?", help="rerun: the record's name, e.g. confirm/full/ppkt_s1000")
    p.add_argument("--protocol", default=str(ROOT / "configs" / "protocols" / "segmentation.yaml"))
    p.add_argument("--out", default="runs/segmentation", help="folder of the runs and results.json")
    p.add_argument("--results", help="report / rerun: a results file (default <out>/results.json)")
    p.add_argument("--until", choices=("curves", "confirm"), default="curves")
    p.add_argument("--tuning-page", default=str(ROOT / "docs" / "segmentation_tuning.md"))
    p.add_argument("--page", default=str(ROOT / "docs" / "transfer_benchmark.md"))
    p.add_argument("--rerun-out", help="rerun: the folder to rerun in (default: a temporary folder)")
    args = p.parse_args()
    protocol_file, out = Path(args.protocol), Path(args.out)
    protocol = load_protocol(protocol_file)
    if args.command == "run":
        results = run(protocol, protocol_file, out, args.until)
    else:
        path = Path(args.results) if args.results else out / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path}: not found; run the benchmark first (benchmarks/segmentation.py run)")
        results = Results(path)
    if args.command == "rerun":
        if not args.id:
            raise SystemExit("rerun needs the id of a record, e.g. confirm/full/ppkt_s1000")
        with tempfile.TemporaryDirectory() as tmp:
            r = rerun(results, args.id, Path(args.rerun_out or tmp))
        print(f"{args.id}: recorded {r['score']} {r['recorded']:.2f}, rerun {r['rerun']:.2f}")
        return
    write_tuning_page(results, protocol, Path(args.tuning_page))
    if results.select(stage="confirm"):
        write_confirm_page(results, protocol, Path(args.page))
    print(f"pages: {args.tuning_page}" + (f", {args.page}" if results.select(stage="confirm") else ""))


if __name__ == "__main__":
    main()
