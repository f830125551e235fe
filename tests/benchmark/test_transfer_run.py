"""The transfer benchmark end to end on a tiny world: every stage runs, every run has its twin, a second call
reuses everything, a changed setting reruns only what it changes, and the page comes from results.json."""
import json
from pathlib import Path

import pytest

from ppkt.benchmark.report import write_report
from ppkt.benchmark.results import Results
from ppkt.benchmark.transfer import FULL, Plan, run, scene_fraction
from ppkt.train.run_dir import flatten

pytestmark = pytest.mark.usefixtures("two_threads")


def comparable(record: dict) -> dict:
    flat = flatten(record["settings"]["config"])
    return {k: v for k, v in flat.items() if k not in ("train.out_dir", "model.pretrained", "train.eval_every")}


def tiny_plan(out: Path, **changes) -> Plan:
    settings = dict(out=out, cells=[scene_fraction(0.5), FULL], seeds=2, scenes=6, frames_per_scene=2,
                    point_spacing=0.05, pretrain_iterations=2, finetune_iterations=5, probe_iterations=5,
                    max_voxels=2000, jobs=1, threads=2)
    return Plan(**{**settings, **changes})


def test_tiny_benchmark_runs_reuses_and_reports(tmp_path, capsys):
    out = tmp_path / "bench"
    results = run(tiny_plan(out))
    printed = capsys.readouterr().out
    assert "[1/8] " in printed and "min left" in printed and "[8/8] " in printed  # the pace of the runs done so far
    runs = results.select(stage="finetune")
    assert sorted((r["cell"], r["init"], r["seed"]) for r in runs) == sorted(
        (c, i, s) for c in ("f0.5", "full") for i in ("scratch", "ppkt") for s in (0, 1))
    for r in runs:
        # scratch evaluated at 80 % and 100 % of 5 iterations (the convergence check), its twin at the end
        assert 0.0 <= r["miou"] <= 1.0 and [it for it, _ in r["curve"]] == ([4, 5] if r["init"] == "scratch" else [5])
        assert r["settings"]["config"]["train"]["seed"] == r["seed"]
        twin = results.records[f"{r['cell']}/{'ppkt' if r['init'] == 'scratch' else 'scratch'}_s{r['seed']}"]
        # the same config (labelled selection, seed, data order) but for the start and the folder
        assert comparable(twin) == comparable(r)
    stamps = {name: rec.get("finished") for name, rec in results.records.items()}

    again = run(tiny_plan(out))  # nothing changed: nothing reruns
    assert {name: rec.get("finished") for name, rec in again.records.items()} == stamps

    # a pretraining record from before ppkt had loss.name and data.overlaps: the same run at their defaults, kept
    data = json.loads((out / "results.json").read_text())
    old = next(r for r in data["runs"] if r["name"] == "pretrain")["settings"]["config"]
    del old["loss"]["name"], old["data"]["overlaps"]
    (out / "results.json").write_text(json.dumps(data))
    older = run(tiny_plan(out))
    assert {name: rec.get("finished") for name, rec in older.records.items()} == stamps
    assert older.records["pretrain"]["settings"]["config"]["loss"]["name"] == "ppnce"

    changed = run(tiny_plan(out, finetune_iterations=6, cells=[FULL], seeds=1))  # only these runs change
    redone = [n for n, rec in changed.records.items() if rec.get("finished") != stamps.get(n)]
    assert sorted(redone) == ["full/ppkt_s0", "full/scratch_s0"]

    text = write_report(Results(out / "results.json"), tmp_path / "page.md")
    assert "50 % of the scenes (stratified)" in text and "100 % of the scenes" in text
    assert json.loads((out / "results.json").read_text())["format"] == "ppkt-benchmark-results"
