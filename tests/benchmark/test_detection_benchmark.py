"""The detection benchmark end to end on a tiny world: world and backbone shared with the segmentation cells, paired
scratch / PPKT detection runs per seed, reuse on a second call, and the section it writes into a page."""
import pytest

from ppkt.benchmark.detection import DET_FULL, RECIPE, STAGE, det_fraction, run
from ppkt.benchmark.report import BEGIN, END, write_detection_report
from ppkt.benchmark.results import Results
from ppkt.benchmark.transfer import Plan

pytestmark = pytest.mark.usefixtures("two_threads")


def tiny_plan(out) -> Plan:
    return Plan(out=out, cells=[det_fraction(0.5), DET_FULL], seeds=2, scenes=5, frames_per_scene=2, point_spacing=0.05,
                pretrain_iterations=2, finetune_iterations=3, probe_iterations=0, max_voxels=1500, jobs=1, threads=2,
                finetune_overrides=RECIPE + ("model.num_seeds=64", "model.num_proposals=16", "model.nsample=4"),
                channels=(8, 16, 16, 16, 16, 16, 16, 16))


def test_tiny_detection_benchmark_runs_reuses_and_reports(tmp_path):
    out = tmp_path / "transfer"
    results = run(tiny_plan(out))
    runs = results.select(stage=STAGE)
    assert sorted((r["cell"], r["init"], r["seed"]) for r in runs) == sorted(
        (c, i, s) for c in ("det_f0.5", "det_full") for i in ("scratch", "ppkt") for s in (0, 1))
    by = {(r["cell"], r["init"], r["seed"]): r for r in runs}
    assert by["det_full", "scratch", 0]["settings"]["config"]["model"]["pretrained"] is None
    assert by["det_full", "ppkt", 0]["settings"]["config"]["model"]["pretrained"].endswith("pretrain/ppkt/backbone.pth")
    assert by["det_f0.5", "ppkt", 1]["settings"]["config"]["data"]["label_fraction"] == 0.5
    assert all(0 <= r["map50"] <= r["map25"] <= 1 and r["s_per_iteration"] > 0 for r in runs)
    # a recorded score is its checkpoint's: evaluated again on the same val split, the same mAP@0.25 and mAP@0.5
    from ppkt.train.detect import evaluate_detection_checkpoint

    record = by["det_full", "ppkt", 1]
    again = evaluate_detection_checkpoint(out / STAGE / "det_full" / "ppkt_s1" / "checkpoints" / "last.pt",
                                          out / "world", "val", tmp_path / "again", "cpu", False)
    assert (again["mAP@0.25"], again["mAP@0.5"]) == pytest.approx((record["map25"], record["map50"]), abs=1e-9)
    assert len(by["det_full", "scratch", 0]["curve"]) == 2  # at 80 % and at the end: the convergence check
    stamps = {name: rec.get("finished") for name, rec in results.records.items()}
    again = run(tiny_plan(out))
    assert {name: rec.get("finished") for name, rec in again.records.items()} == stamps

    page = tmp_path / "detection.md"
    page.write_text(f"# Detection\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    section = write_detection_report(Results(out / "results.json"), page)
    text = page.read_text()
    assert "old table" not in text and text.startswith("# Detection\n\nbefore") and text.endswith("after\n")
    assert "| detection, 50 % of the scenes | 2 |" in section and "| detection, 100 % of the scenes | 2 |" in section
    assert "s per training iteration" in section and "59.67" in section
