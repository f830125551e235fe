"""The confirmatory segmentation benchmark's pages, written from results.json alone: the tuning page (learning curves
and pilots on val, the budgets they chose) and, once the confirmatory run exists, the test-world page."""
from __future__ import annotations

from pathlib import Path
from statistics import mean, stdev
from typing import List

from ppkt.benchmark.confirm import TASKS, TEST_WORLD, curve, pilot, plateau, summary
from ppkt.benchmark.protocol import Protocol
from ppkt.benchmark.report import provenance, stage_minutes
from ppkt.benchmark.results import Results

DETECTION_PAPER = "ScanNet, all labels: mAP@0.25 +3.17, mAP@0.5 +4.36"
PAPER = {"probe": None, "full": "no gain (ScanNet, all labels: 69.49 -> 69.56)",
         "f": "+2.23 at 15 % of the scenes (ScanNet)", "p": "not reported (the data-efficient protocol came later)"}


def paper_says(key: str) -> str:
    return PAPER.get(key) or PAPER.get(key[:1]) or "not reported"


def plot_curves(results: Results, protocol: Protocol, path: Path) -> None:
    """Val mIoU against fine-tuning iterations (log 2), scratch and PPKT, one panel per cell; seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = TASKS[protocol.task]
    cells = [c for c in protocol.cells if curve(results, c.key, task.val_score)]
    fig, axes = plt.subplots(1, max(len(cells), 1), figsize=(3.2 * max(len(cells), 1), 3.2), dpi=110, squeeze=False)
    for ax, spec in zip(axes[0], cells):
        c = curve(results, spec.key, task.val_score)
        for init, colour in (("scratch", "C0"), ("ppkt", "C1")):
            budgets = [b for b in sorted(c) if c[b].get(init)]
            ax.plot(budgets, [mean(c[b][init]) for b in budgets], "-o", color=colour, label=init, ms=4)
            for b in budgets:
                ax.plot([b] * len(c[b][init]), c[b][init], ".", color=colour, alpha=0.4)
        if spec.budget:
            ax.axvline(spec.budget, color="k", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_title(spec.key, fontsize=9)
        ax.set_xlabel("fine-tuning iterations", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"val {task.score_name[0]} (points)", fontsize=8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def curve_table(results: Results, protocol: Protocol) -> List[str]:
    task = TASKS[protocol.task]
    name = task.score_name[0]
    lines = [f"| cell | budget | seeds | scratch val {name} | PPKT val {name} | PPKT - scratch | scratch change at the "
             "next doubling |", "|" + " --- |" * 7]
    for spec in protocol.cells:
        p = plateau(results, spec.key, protocol.plateau_gain, task.val_score)
        for b, arms in sorted(p["curve"].items()):
            n = min(len(arms.get("scratch", [])), len(arms.get("ppkt", [])))
            if not n:
                continue
            s, q = mean(arms["scratch"][:n]), mean(arms["ppkt"][:n])
            change = p["changes"].get(b)
            lines.append(f"| {spec.key} | {b} | {n} | {s:.1f} | {q:.1f} | {q - s:+.1f} | "
                         + (f"{change:+.1f}" if change is not None else "") + " |")
    return lines


def write_tuning_page(results: Results, protocol: Protocol, page: Path) -> str:
    """The learning curves and pilots on val (nothing from the test world), with the budget each cell's curve
    supports: at the plateau, or the largest measured with scratch's gain still per doubling."""
    task = TASKS[protocol.task]
    name = task.score_name[0]
    image = Path("images") / (page.stem + ".png")
    plot_curves(results, protocol, page.parent / image)
    chosen: List[str] = []
    for spec in protocol.cells:
        p = plateau(results, spec.key, protocol.plateau_gain, task.val_score)
        if p["budget"] is not None:
            chosen.append(f"- {spec.key}: at the plateau from {p['budget']} iterations (doubling changed scratch by "
                          f"{p['changes'][p['budget']]:+.1f} val {name})")
        elif p["last_gain"] is not None:
            chosen.append(f"- {spec.key}: no plateau up to {max(p['curve'])} iterations (scratch's last doubling: "
                          f"{p['last_gain']:+.1f})")
    pilots = []
    for spec in protocol.cells:
        q = pilot(results, protocol, spec)
        if q is not None:
            pilots.append(f"- {spec.key} at {spec.budget} iterations: {q['pairs']} pairs on val, PPKT - scratch "
                          + ", ".join(f"{x:+.1f}" for x in q["diffs"]) + f" (sd {q['sd']:.2f}); Stein's rule for "
                          f"±{protocol.half_width:g} at {100 * protocol.confidence:g} %: {q['stein']} pairs")
    if pilots:
        pilots = ["Pilots (they fix each cell's confirmatory pairs before any test score exists):", "", *pilots]
    text = "\n".join([
        f"# {protocol.name.capitalize()} benchmark: tuning on val", "",
        f"Learning curves of the confirmatory protocol (`configs/protocols/{protocol.name}.yaml`), measured on the val "
        "scenes of the world only: the test world is not read by these stages. Each budget is a whole run of that "
        "length (the cosine schedule ends at the budget); seed s fine-tunes the backbone of pretraining run s mod "
        f"{protocol.pretrain_runs}. A budget B is at the plateau when doubling it changes scratch's mean val {name} by "
        f"less than {protocol.plateau_gain:g} point. The stages go on with `ppkt benchmark "
        f"{'transfer' if protocol.task == 'segmentation' else 'detection'} run --seed-results "
        f"docs/results/{protocol.name}.json` (the worlds and pretraining runs are made again, deterministically; every "
        "finished run is reused).", "", provenance(results), "", *curve_table(results, protocol), "",
        *chosen, "", *pilots, "", f"Time: {stage_minutes(results, 'curve', 'curves')}.", "",
        f"![val {name} against iterations]({image.as_posix()})", ""])
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text


def confirm_table(results: Results, protocol: Protocol) -> List[str]:
    """One row per cell and test score: both arms' means, PPKT - scratch with its interval over pretraining runs, the
    verdict, the floors (segmentation) and the paper's finding."""
    task = TASKS[protocol.task]
    floors = protocol.task == "segmentation"
    lines = ["| cell | score | budget | pairs (pretraining runs) | scratch | PPKT | PPKT - scratch (95 % CI) | verdict | "
             + ("lookup floor | kNN floor | " if floors else "") + "the paper |", "|" + " --- |" * (11 if floors else 9)]
    for spec in protocol.cells:
        for score, name in zip(task.test_scores, task.score_name):
            s = summary(results, spec.key, protocol.margin, protocol.confidence, score)
            if s is None:
                continue
            iv, f = s["interval"], s["floors"]
            claim = f"{s['budget']}" + (" (plateau)" if spec.plateau else " (before the plateau)")
            lines.append(f"| {s['title']} | {name} | {claim} | {s['pairs']} ({s['pretrain_runs']}) | {s['scratch']:.1f} | "
                         f"{s['ppkt']:.1f} | {iv.mean:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}] | {s['verdict']} | "
                         + ("".join(f"{f[k]:.1f} | " if k in f else "- | " for k in ("lookup", "knn")) if floors else "")
                         + f"{paper_says(spec.key) if protocol.task == 'segmentation' else DETECTION_PAPER} |")
    return lines


def pretrain_spread(results: Results) -> str:
    """The spread of the linear probe's PPKT test mIoU between pretraining runs (the probe reads the backbone as it
    is, so it shows the pretraining runs' own differences)."""
    by = {}
    for r in results.select(stage="confirm", cell="probe", init="ppkt"):
        by.setdefault(r["pretrain_run"], []).append(100 * r["test_miou"])
    if len(by) < 2:
        return ""
    means = [mean(v) for v in by.values()]
    return (f"Spread between the {len(by)} pretraining runs: their linear probes score {min(means):.1f} to "
            f"{max(means):.1f} test mIoU (sd {stdev(means):.2f}).")


def run_ids(results: Results, protocol: Protocol) -> List[str]:
    """Every confirmatory run by id (its record's name) with its test score, a line per cell."""
    score = TASKS[protocol.task].test_scores[0]
    lines = []
    for spec in protocol.cells:
        runs = sorted(results.select(stage="confirm", cell=spec.key), key=lambda r: (r["pair"], r["init"]))
        if runs:
            lines.append(f"- {spec.key}: " + ", ".join(f"`{r['name']}` {100 * r[score]:.1f}" for r in runs))
    bench = "transfer" if protocol.task == "segmentation" else "detection"
    return [f"Runs (id and test score; `ppkt benchmark {bench} rerun ID` reruns one from nothing, its "
            f"pretraining included, and prints both scores; every record is in `docs/results/{protocol.name}.json`):",
            "", *lines] if lines else []


def write_confirm_page(results: Results, protocol: Protocol, page: Path, intro: str = "") -> str:
    record = results.records.get("protocol", {})
    title = "Transfer benchmark" if protocol.task == "segmentation" else "Detection benchmark"
    text = "\n".join([
        f"# {title} (synthetic world): the confirmatory run", "", *([intro, ""] if intro else []),
        f"Protocol: `{record.get('file', '?')}` at commit {record.get('commit', '?')}, committed before this run. "
        f"Scores: {' and '.join(TASKS[protocol.task].score_name)} on the test world (`{TEST_WORLD}`, world seed {protocol.test_seed}, {protocol.test_scenes} "
        "scenes that no tuning stage and no pretraining run read). Interval: the mean paired difference over "
        "pretraining runs (the pairs of one pretraining run form one cluster; t over the clusters), so another "
        f"pretraining run's spread is inside it. Verdict: helps / hurts when the interval excludes 0; no effect larger "
        f"than ±{protocol.margin:g} only when it lies inside ±{protocol.margin:g}; else inconclusive. A network "
        "below a floor is under-trained.", "", provenance(results), "", *confirm_table(results, protocol), "",
        pretrain_spread(results), "", f"Time: {stage_minutes(results, 'confirm', 'confirmatory fine-tuning')}.", "",
        *run_ids(results, protocol), ""])
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text
