"""The confirmatory benchmarks (ppkt/benchmark/confirm.py): segmentation (configs/protocols/segmentation.yaml, the
default) and detection (--protocol configs/protocols/detection.yaml).

    python benchmarks/confirm.py run --until curves   # worlds, pretraining runs, learning curves + pilots on val
    python benchmarks/confirm.py run --until confirm  # then the confirmatory pairs on the test world (and the floors);
                                                      # needs the protocol fixed and committed
    python benchmarks/confirm.py report               # the pages again from results.json, and its committed copy
                                                      # docs/results/<protocol name>.json
    python benchmarks/confirm.py rerun ID             # one record from nothing, its score beside the recorded one

Every stage resumes: a finished run is a record of <out>/results.json, reused while its settings are unchanged.
`run --seed-results docs/results/<name>.json` starts a new folder from the committed records: the worlds and
pretraining runs are made again (deterministic: the same files), and every run whose settings then match is reused.
"""
from __future__ import annotations

import ppkt  # noqa: F401  (first: the OpenMP wait policy before torch loads)

import argparse
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"segmentation": ("docs/transfer_benchmark.md", "docs/segmentation_tuning.md"),
         "detection": ("docs/detection_benchmark.md", "docs/detection_tuning.md")}


def main() -> None:
    from ppkt.benchmark.confirm import rerun, run, upgrade_digests
    from ppkt.benchmark.confirm_report import write_confirm_page, write_tuning_page
    from ppkt.benchmark.protocol import load_protocol
    from ppkt.benchmark.results import Results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "report", "rerun"))
    p.add_argument("id", nargs="?", help="rerun: the record's name, e.g. confirm/full/ppkt_s1000")
    p.add_argument("--protocol", default=str(ROOT / "configs" / "protocols" / "segmentation.yaml"))
    p.add_argument("--out", help="folder of the runs and results.json (default runs/<protocol name>)")
    p.add_argument("--results", help="report / rerun: a results file (default <out>/results.json)")
    p.add_argument("--seed-results", help="run: start <out>/results.json from this file when it does not exist")
    p.add_argument("--until", choices=("curves", "confirm"), default="curves")
    p.add_argument("--rerun-out", help="rerun: the folder to rerun in (default: a temporary folder)")
    args = p.parse_args()
    protocol_file = Path(args.protocol)
    protocol = load_protocol(protocol_file)
    out = Path(args.out or f"runs/{protocol.name}")
    page, tuning_page = (ROOT / p for p in PAGES[protocol.task])
    if args.command == "run":
        if args.seed_results and not (out / "results.json").exists():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.seed_results, out / "results.json")
        results = run(protocol, protocol_file, out, args.until)
    else:
        path = Path(args.results) if args.results else out / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path}: not found; run the benchmark first (benchmarks/confirm.py run)")
        results = Results(path)
        if not args.results:
            upgrade_digests(results)
    if args.command == "rerun":
        if not args.id:
            raise SystemExit("rerun needs the id of a record, e.g. confirm/full/ppkt_s1000")
        with tempfile.TemporaryDirectory() as tmp:
            r = rerun(results, args.id, Path(args.rerun_out or tmp), protocol)
        print(f"{args.id}: recorded {r['score']} {r['recorded']:.2f}, rerun {r['rerun']:.2f}")
        return
    write_tuning_page(results, protocol, tuning_page)
    written = [tuning_page]
    if results.select(stage="confirm"):
        write_confirm_page(results, protocol, page)
        written.append(page)
    copy = ROOT / "docs" / "results" / f"{protocol.name}.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    if results.path.resolve() != copy.resolve():
        shutil.copyfile(results.path, copy)
    print("written: " + ", ".join(str(w) for w in [*written, copy]))


if __name__ == "__main__":
    main()
