"""The ablation runner end to end on a tiny world: the input stages (frame pairs, the 2D segmentation teacher), one
pretraining per variant, every variant fine-tuned with the same seeds, reuse on a second call, and the page."""
import pytest

from ppkt.benchmark.ablations import VARIANTS, AblationPlan, run, tables_for
from ppkt.benchmark.report import write_ablation_report
from ppkt.benchmark.results import Results
from ppkt.benchmark.transfer import PROBE, scene_fraction
from ppkt.cli import main as cli_main
from ppkt.train.run_dir import file_digest

pytestmark = pytest.mark.usefixtures("two_threads")

VARIANT_KEYS = ("scratch", "ppnce", "pl", "pointcontrast", "ppkd", "global_kd")


def tiny_plan(out, **changes) -> AblationPlan:
    settings = dict(out=out, cells=[PROBE, scene_fraction(0.5)], seeds=2, scenes=6, frames_per_scene=3,
                    point_spacing=0.05, pretrain_iterations=2, finetune_iterations=5, probe_iterations=5,
                    max_voxels=2000, jobs=1, threads=2, channels=(8, 16, 16, 16, 16, 16, 16, 16),
                    variants=VARIANT_KEYS, teacher2d_iterations=2, min_overlap=0.05)
    return AblationPlan(**{**settings, **changes})


def test_tiny_ablations_run_reuse_rerun_and_report(tmp_path, capsys):
    out = tmp_path / "ablations"
    results = run(tiny_plan(out))
    assert results.records["overlaps"]["overlaps"] > 0 and (out / "teacher2d.pt").is_file()
    # the 2D segmentation teacher learnt from another world: none of the benchmark world's labels
    assert results.records["world_teacher"]["settings"]["seed"] != results.records["world"]["settings"]["seed"]
    assert results.records["teacher2d"]["settings"]["world"] == file_digest(out / "world_teacher" / "dataset.json")
    assert file_digest(out / "world_teacher" / "dataset.json") != file_digest(out / "world" / "dataset.json")
    methods = {r["method"] for r in results.select(stage="pretrain")}
    assert methods == {"ppnce", "pl", "pointcontrast", "ppkd", "global_kd"}
    runs = results.select(stage="finetune")
    assert sorted((r["cell"], r["init"], r["seed"]) for r in runs) == sorted(
        (c, v, s) for c in ("probe", "f0.5") for v in VARIANT_KEYS for s in (0, 1))
    # the pretrained variants start from their own export; every run of a seed shares its config otherwise
    f05 = {r["init"]: r["settings"]["config"] for r in runs if r["cell"] == "f0.5" and r["seed"] == 0}
    assert f05["scratch"]["model"]["pretrained"] is None
    assert f05["ppkd"]["model"]["pretrained"].endswith("pretrain/ppkd/backbone.pth")
    assert {c["train"]["seed"] for c in f05.values()} == {0}
    stamps = {name: rec.get("finished") for name, rec in results.records.items()}
    again = run(tiny_plan(out))
    assert {name: rec.get("finished") for name, rec in again.records.items()} == stamps

    # `ppkt benchmark ablations rerun ID`: the fine-tuning again from the recorded world and backbone, the same score
    assert cli_main(["benchmark", "ablations", "rerun", "f0.5/ppkd_s1", "--out", str(out),
                     "--rerun-out", str(tmp_path / "rerun")]) == 0
    recorded = 100 * again.records["f0.5/ppkd_s1"]["miou"]
    assert f"f0.5/ppkd_s1: recorded miou {recorded:.2f}, rerun {recorded:.2f}" in capsys.readouterr().out

    tables = tables_for(VARIANT_KEYS)
    # the tables with their rows whose variants ran: methods (4 of 6 rows), UPL vs PL (2), PPNCE vs PPKD (ppkd -
    # scratch only: no ppnce_seg), student size (ppnce - scratch only: no wide student)
    assert [len(t.rows) for t in tables] == [4, 2, 1, 1]
    text = write_ablation_report(Results(out / "results.json"), tmp_path / "ablations.md", tables)
    assert "## Pretraining methods" in text and "## Upsampling projection (UPL) vs plain projection (PL)" in text
    assert f"| {VARIANTS['ppkd'].title} - scratch | 50 % of the scenes (stratified) | 2 |" in text
    assert f"| {VARIANTS['ppnce'].title} - {VARIANTS['pl'].title} | linear probe" in text
    assert "agrees" in text and "Time: world" in text and "overlaps" in text and "teacher2d" in text


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown ablation variant"):
        run(tiny_plan(tmp_path, variants=("scratch", "ppnse")))
