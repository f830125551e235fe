"""The page and plot of the transfer benchmark before the confirmatory protocol (its tables are history), written from results.json alone."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from ppkt.benchmark.results import Results, wall_minutes
from ppkt.benchmark.transfer import TARGET_HALFWIDTH, cell_summary

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


def stage_minutes(results: Results, stage: str = "finetune", title: str = "fine-tuning") -> str:
    """Wall-clock minutes per stage (the world, ..., the pretraining, then `stage`'s runs, called `title`) and in all;
    per cell, the sum of its runs' own minutes."""
    runs = list(results.records.values())
    tuned = [r for r in runs if r.get("stage") == stage]
    stages = {before: wall_minutes([r for r in runs if r.get("stage") == before])
              for before in ("world", "overlaps", "teacher2d", "pretrain") if before == "world" or any(
                  r.get("stage") == before for r in runs)}
    stages[title] = wall_minutes(tuned)
    cells = {}
    for r in tuned:
        cells[r["cell"]] = cells.get(r["cell"], 0.0) + r["seconds"] / 60
    return (", ".join(f"{k} {v:.1f} min" for k, v in stages.items()) + f"; total {sum(stages.values()):.1f} min "
            f"wall clock. The {len(tuned)} {title} runs took " +
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


def setup(results: Results) -> str:
    """What was run, read from the records' settings: world, pretraining, fine-tuning recipe."""
    world = results.records.get("world", {}).get("settings", {})
    pre = next(iter(results.select(stage="pretrain")), {}).get("settings", {}).get("config", {})
    tuned = [r for r in results.select(stage="finetune") if r["cell"] != "probe" and "config" in r["settings"]]
    parts = []
    if world:
        parts.append(f"A synthetic world of {world['scenes']} rooms ({world['frames_per_scene']} RGB-D frames each; "
                     f"labelled point clouds at {100 * world['point_spacing']:g} cm)")
    if pre:
        widths = f" at widths {pre['student']['channels']}" if pre["student"].get("channels") else ""
        parts.append(f"PPKT pretrained for {pre['train']['iterations']} iterations ({pre['student']['arch']} student{widths}, "
                     f"{pre['teacher']['arch']} teacher, {pre['data']['frame']} frame) on the frames of the training "
                     f"scenes only")
    if tuned:
        c = tuned[0]["settings"]["config"]
        o, t, d = c["optim"], c["train"], c["data"]
        momentum = c["model"].get("bn_momentum", 0.01)  # records made before the setting existed ran at 0.01
        parts.append(f"fine-tuning {t['iterations']} iterations of {t['batch_size']} scenes ({d['voxel_size'] * 100:g} cm "
                     f"voxels, crops of at most {d['max_voxels']} voxels), {o['name']} at lr {o['lr']:g} with a "
                     f"{o['schedule']} decay, batch-norm momentum {momentum:g}; every PPKT run has a scratch twin with "
                     f"the same labelled selection, seed and data order")
    return "; ".join(parts) + "." if parts else ""


INTERVAL = ("Difference: mean over seeds of PPKT minus scratch (mIoU points), with the 95 % Student-t interval of "
            "the paired differences (the pairs share the label selection, so its effect cancels; with few pairs the t "
            "quantile keeps the coverage honest). Verdict from the interval alone. Convergence: scratch's val mIoU at "
            "the end minus at 80 % of its iterations, mean over seeds; under 1 point counts as converged.")


def reading(results: Results) -> List[str]:
    """What the table says about the paper's claim, in plain words generated from the intervals."""
    rows = {key: cell_summary(results, key) for key in cells_in(results)}
    rows = {k: r for k, r in rows.items() if r is not None}
    out = [PAPER, ""]
    regimes = [r for r in rows.values() if r["labels"] <= 1.0]  # the probe is not a label regime
    if not regimes:
        return out

    def say(r: dict) -> str:
        iv = r["interval"]
        note = "" if r["scratch_change"] is None or abs(r["scratch_change"]) < 1.0 else ", scratch not converged"
        return f"{r['title']}: {iv.mean:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}] ({r['verdict']}{note})"

    out.append("Here: " + "; ".join(say(r) for r in regimes) + ".")
    few, full = regimes[0], regimes[-1]
    if full["labels"] == 1.0 and few is not full:
        claims = []
        f15 = rows.get("f0.15")
        if f15 is not None:
            claims.append("At 15 % of the scenes the paper finds +2.23; here "
                          f"{f15['interval'].mean:+.1f} ({f15['verdict']}), which "
                          + ("agrees in sign" + (" and is larger" if f15["interval"].low > 2.23 else "")
                             if f15["verdict"] == "helps" else "does not reproduce it") + ".")
        unconverged = full["scratch_change"] is not None and abs(full["scratch_change"]) >= 1.0
        if full["verdict"].startswith("inconclusive"):
            claims.append("With all labels the paper finds no gain; here the interval allows both no gain and one larger "
                          "than the margin: inconclusive, so this run cannot tell.")
        elif full["verdict"] not in ("helps", "hurts"):
            claims.append("With all labels the paper finds no gain; here the interval allows none either, which agrees.")
        else:
            claims.append(f"With all labels the paper finds no gain; here PPKT {full['verdict']} "
                          f"({full['interval'].mean:+.1f}), which disagrees" + (
                              f" -- but scratch had not converged ({full['scratch_change']:+.1f} over its last 20 %), "
                              "so this is the difference at this budget, not after convergence." if unconverged else "."))
        separated = few["interval"].low > full["interval"].high
        claims.append(f"The gain with the fewest labels ({few['title']}) is "
                      + ("larger than with all labels, and the intervals do not overlap: the gain grows as labels "
                         "shrink, as in the paper." if separated else
                         "not shown to be larger than with all labels (the intervals overlap), so this run does not "
                         "show the paper's growth of the gain as labels shrink."))
        out += ["", *(f"- {c}" for c in claims)]
    if "probe" in rows:
        p = rows["probe"]
        out += ["", f"Linear probe of frozen features: {p['ppkt']:.1f} mIoU from PPKT against {p['scratch']:.1f} from "
                    f"random features ({p['interval'].mean:+.1f} [{p['interval'].low:+.1f}, {p['interval'].high:+.1f}]):"
                    " what pretraining put into the features, before fine-tuning can change them."]
    return out


def power(results: Results) -> str:
    """The interval half-width of every cell against the target, and the seeds it took."""
    rows = [cell_summary(results, key) for key in cells_in(results)]
    rows = [r for r in rows if r is not None]
    met = [r for r in rows if r["interval"].half_width <= TARGET_HALFWIDTH]
    return ("Power: 95 % half-widths " + ", ".join(f"{r['title']} ±{r['interval'].half_width:.2f} ({r['seeds']} seeds)"
                                                     for r in rows)
            + f"; the target ±{TARGET_HALFWIDTH:g} is met in {len(met)} of {len(rows)} cells. In `make "
              "bench-transfer` seeds come in rounds: 6 pairs per cell, then one more pair per round for each cell "
              "still wider than the target, while the next round fits in the 90-minute budget.")


def write_report(results: Results, page: Path, title: str = "Transfer benchmark (synthetic world)",
                 intro: str = "") -> str:
    image = Path("images") / (page.stem + ".png")
    plot(results, page.parent / image)
    text = "\n".join([f"# {title}", "", *([intro, ""] if intro else []), setup(results), "", provenance(results), "",
                      *table(results), "", INTERVAL, "", power(results), "", *reading(results), "",
                      f"Time: {stage_minutes(results)}.", "",
                      f"![PPKT minus scratch per regime]({image.as_posix()})", ""])
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text


def agreement(verdict: str, paper: str) -> str:
    """Whether an interval's verdict agrees with the paper's finding ("helps" / "no gain"); an inconclusive interval
    cannot tell."""
    if verdict.startswith("inconclusive"):
        return "cannot tell (inconclusive)"
    if paper == "helps":
        return "agrees" if verdict == "helps" else "disagrees (the paper finds a gain)"
    return "agrees" if verdict not in ("helps", "hurts") else f"disagrees (the paper finds no gain; here it {verdict})"


def comparison_table(results: Results, table) -> List[str]:
    """One ablation table (`ppkt.benchmark.ablations.Table`): a row per comparison and regime, a - b with its interval,
    the verdict and whether it agrees with the paper."""
    from ppkt.benchmark.ablations import VARIANTS

    lines = [f"## {table.title}", "", "| a - b | regime | seeds | a mIoU | b mIoU | a - b (95 % CI) | verdict | "
             "the paper | b, last 20 % |", "|" + " --- |" * 9]
    for a, b, paper in table.rows:
        for key in cells_in(results):
            s = cell_summary(results, key, a=a, b=b)
            if s is None:
                continue
            iv = s["interval"]
            lines.append(f"| {VARIANTS[a].title} - {VARIANTS[b].title} | {s['title']} | {s['seeds']} | {s['ppkt']:.1f} | "
                         f"{s['scratch']:.1f} | {iv.mean:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}] | {s['verdict']} | "
                         f"{paper}: {agreement(s['verdict'], paper)} | {converged(s['scratch_change'])} |")
    return lines + ["", table.paper, ""]


def write_ablation_report(results: Results, page: Path, tables: Sequence) -> str:
    """docs/ablations.md from results.json: the setup, one table per paper comparison, the time per stage."""
    from ppkt.benchmark.ablations import VARIANTS

    done = {r.get("method") for r in results.select(stage="pretrain")}
    variants = [f"- `{v.key}`: {v.title}" + (f" (`{' '.join(v.overrides)}`)" if v.overrides else "")
                + (f", student widths {list(v.channels)}" if v.channels else "")
                for v in VARIANTS.values() if v.key in done or (not v.pretrained and results.select(init=v.key))]
    text = "\n".join(["# Ablations and baselines (synthetic world)", "", setup(results), "", "Variants (pretraining "
                      "config overrides):", "", *variants, "", provenance(results), "",
                      "Every variant is fine-tuned with the same seeds, so two variants of a seed are a pair (same "
                      "labelled selection, seed and data order); a - b is the mean paired difference in mIoU points "
                      "with its 95 % Student-t interval over seeds, and the verdict comes from the interval alone "
                      "(see docs/transfer_benchmark.md). The convergence check is that of b when b is a scratch "
                      "baseline.", "", *(line for t in tables for line in comparison_table(results, t)),
                      f"Time: {stage_minutes(results)}.", ""])
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text


DETECTION_PAPER = ("The paper (Table 3, VoteNet on SR-UNet): PPKT raises ScanNet mAP@0.25 from 56.50 to 59.67 (+3.17) and "
                   "mAP@0.5 from 34.54 to 38.90 (+4.36), SUN RGB-D mAP@0.25 from 55.21 to 57.26 (+2.05), all labels.")
BEGIN, END = "<!-- detection benchmark: begin (written by ppkt.benchmark.report) -->", "<!-- detection benchmark: end -->"


def detection_section(results: Results) -> List[str]:
    """The detection benchmark's table (mAP@0.25 and mAP@0.5, PPKT vs scratch with 95 % intervals), setup and time."""
    from statistics import median

    from ppkt.benchmark.detection import SCORE, STAGE

    runs = results.select(stage=STAGE)
    keys = sorted({r["cell"]: r["labels"] for r in runs}.items(), key=lambda kv: kv[1])
    lines = ["| regime | seeds | scratch mAP@0.25 | PPKT mAP@0.25 | PPKT - scratch (95 % CI) | verdict | scratch mAP@0.5 | "
             "PPKT mAP@0.5 | PPKT - scratch @0.5 (95 % CI) | scratch, last 20 % (@0.25) |", "|" + " --- |" * 10]
    says = []
    for key, _ in keys:
        s = cell_summary(results, key, stage=STAGE, score=SCORE)
        h = cell_summary(results, key, stage=STAGE, score="map50")
        if s is None:
            continue
        iv, jv = s["interval"], h["interval"]
        lines.append(f"| {s['title']} | {s['seeds']} | {s['scratch']:.1f} | {s['ppkt']:.1f} | {iv.mean:+.1f} [{iv.low:+.1f}, "
                     f"{iv.high:+.1f}] | {s['verdict']} | {h['scratch']:.1f} | {h['ppkt']:.1f} | {jv.mean:+.1f} "
                     f"[{jv.low:+.1f}, {jv.high:+.1f}] | {converged(s['scratch_change'])} |")
        says.append(f"{s['title']}: mAP@0.25 {iv.mean:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}] ({s['verdict']}), "
                    f"mAP@0.5 {jv.mean:+.1f} [{jv.low:+.1f}, {jv.high:+.1f}] ({h['verdict']})")
    steps = [r["s_per_iteration"] for r in runs if r.get("s_per_iteration")]
    cfg = runs[0]["settings"]["config"] if runs else {}
    setup_line = ""
    if cfg:
        d, m, t = cfg["data"], cfg["model"], cfg["train"]
        setup_line = (f"VoteNet on {m['arch']} (widths {m['channels']}), {t['iterations']} iterations of {t['batch_size']} "
                      f"scenes ({100 * d['voxel_size']:g} cm voxels, training crops of at most {d['max_voxels']} voxels), "
                      f"{cfg['optim']['name']} lr {cfg['optim']['lr']:g} {cfg['optim']['schedule']}; {m['num_seeds']} seeds, "
                      f"{m['num_proposals']} proposals, {m['num_heading_bins']} heading bins, oriented IoU. The PPKT "
                      "backbone is pretrained as in the segmentation benchmark (docs/transfer_benchmark.md), at these "
                      "widths, on the same world.")
    return [BEGIN, "", setup_line, "", provenance(results), "", *lines, "",
            "mAP in points (x 100). Intervals: 95 % Student-t over the paired seeds (same scenes, seed and data order).",
            "", DETECTION_PAPER, "", ("Here: " + "; ".join(says) + ".") if says else "", "",
            f"Time: {stage_minutes(results, STAGE, 'detection')}, 1 thread each"
            + (f"; median {median(steps):.2f} s per training iteration within those runs." if steps else "."), "", END]


def write_detection_report(results: Results, page: Path) -> str:
    """Replace the benchmark section of `page` (between BEGIN and END, appended when absent) by `detection_section`."""
    text = page.read_text() if page.is_file() else "# 3D object detection\n"
    section = "\n".join(detection_section(results))
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## The detection benchmark (synthetic world)\n\n" + section + "\n"
    page.write_text(text)
    return section
