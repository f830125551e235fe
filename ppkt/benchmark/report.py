"""The transfer benchmark's page and plot, written from results.json alone (`benchmarks/transfer.py report`)."""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import List, Optional

from ppkt.benchmark.results import Results
from ppkt.benchmark.transfer import cell_summary

PAPER = ("The paper (Figure 4, ScanNet): PPKT gains +2.23 mIoU at 15 % of the scenes and nothing at 100 %; "
         "the gain grows as labels shrink.")


def cells_in(results: Results) -> List[str]:
    """The cell keys present, ordered by label share (fewest labels first)."""
    seen = {}
    for r in results.select(stage="finetune"):
        seen.setdefault(r["cell"], r["labels"])
    return sorted(seen, key=seen.get)


def converged(change: Optional[float]) -> str:
    if change is None:
        return "not checked"
    return f"{change:+.1f} ({'converged' if abs(change) < 1.0 else 'NOT converged'})"


def table(results: Results) -> List[str]:
    lines = ["| regime | seeds | scratch mIoU | PPKT mIoU | PPKT - scratch (95 % CI) | verdict | scratch, last 20 % | "
             "run minutes |", "|" + " --- |" * 8]
    for key in cells_in(results):
        s = cell_summary(results, key)
        if s is None:
            continue
        iv = s["interval"]
        lines.append(f"| {s['title']} | {s['seeds']} | {s['scratch']:.1f} | {s['ppkt']:.1f} | "
                     f"{iv.mean:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}] | {s['verdict']} | "
                     f"{converged(s['scratch_change'])} | {s['minutes']:.0f} |")
    return lines


def wall_minutes(records: List[dict]) -> float:
    """Wall-clock minutes the records' runs cover: the union of their [finished - seconds, finished] spans (runs made
    side by side count once; a stopped and resumed benchmark counts only its working time)."""
    spans = sorted((end - r["seconds"], end) for r in records if "finished" in r and "seconds" in r
                   for end in [datetime.fromisoformat(r["finished"]).timestamp()])
    total, reach = 0.0, -math.inf
    for start, end in spans:
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total / 60


def stage_minutes(results: Results) -> str:
    """Wall-clock minutes per stage and in all; per cell, the sum of its runs' own minutes."""
    runs = list(results.records.values())
    tuned = [r for r in runs if r.get("stage") == "finetune"]
    stages = {stage: wall_minutes([r for r in runs if r.get("stage") == stage]) for stage in ("world", "pretrain")}
    stages["fine-tuning"] = wall_minutes(tuned)
    cells = {}
    for r in tuned:
        cells[r["cell"]] = cells.get(r["cell"], 0.0) + r["seconds"] / 60
    return (", ".join(f"{k} {v:.1f} min" for k, v in stages.items()) + f"; total {sum(stages.values()):.1f} min "
            f"wall clock. The {len(tuned)} fine-tuning runs took " +
            ", ".join(f"{k} {v:.0f}" for k, v in cells.items()) + " run minutes per cell (runs side by side)")


def provenance(results: Results) -> str:
    runs = list(results.records.values())
    dates = sorted(r["finished"][:10] for r in runs if "finished" in r)
    codes = sorted({r.get("code", "?") for r in runs})
    machines = sorted({r.get("machine", "?") for r in runs})
    when = dates[0] if dates and dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}" if dates else "?"
    return f"Runs finished {when}, code {', '.join(codes)}, on {'; '.join(machines)}."


def plot(results: Results, path: Path) -> None:
    """Paired differences with their intervals, one row per regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [cell_summary(results, key) for key in cells_in(results)]
    rows = [r for r in rows if r is not None]
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(rows) + 1.4), dpi=110)
    for i, r in enumerate(rows):
        iv = r["interval"]
        ax.errorbar([iv.mean], [i], xerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt="o", capsize=4, color="C0")
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["title"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("val mIoU, PPKT minus scratch (points; 95 % CI over paired seeds)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def reading(results: Results) -> List[str]:
    """What the table says about the paper's claim, in plain words generated from the intervals."""
    rows = [cell_summary(results, key) for key in cells_in(results)]
    rows = [r for r in rows if r is not None and r["labels"] <= 1.0]  # the probe is not a label regime
    if len(rows) < 2:
        return [PAPER]
    few, full = rows[0], rows[-1]
    grows = few["interval"].mean > full["interval"].mean
    out = [PAPER, "",
           f"Here: {few['title']}: {few['interval'].mean:+.1f} ({few['verdict']}); {full['title']}: "
           f"{full['interval'].mean:+.1f} ({full['verdict']}). The mean gain is "
           f"{'larger' if grows else 'not larger'} with fewer labels"]
    separated = few["interval"].low > full["interval"].high or few["interval"].high < full["interval"].low
    out[-1] += (", and the two intervals do not overlap." if separated else
                ", but the two intervals overlap, so this run does not show that the gain depends on the label budget.")
    return out


def write_report(results: Results, page: Path, title: str = "Transfer benchmark (synthetic world)",
                 intro: str = "") -> str:
    image = Path("images") / (page.stem + ".png")
    plot(results, page.parent / image)
    text = "\n".join([f"# {title}", "", *([intro, ""] if intro else []), provenance(results), "",
                      *table(results), "", *reading(results), "", f"Time: {stage_minutes(results)}.", "",
                      f"![PPKT minus scratch per regime]({image.as_posix()})", ""])
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text
