"""The confirmatory benchmark on a tiny world: the test world is apart from everything tuned or pretrained on, the
confirmatory run needs a fixed protocol committed unchanged, and one command reruns a record to the same score."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ppkt.benchmark.confirm import TEST_WORLD, rerun, run, seed_results, summary
from ppkt.benchmark.confirm_report import write_confirm_page, write_tuning_page
from ppkt.benchmark.protocol import load_protocol
from ppkt.benchmark.results import Results
from ppkt.errors import RunFailed, UserError

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

PROTOCOL = """status: {status}
scenes: 6
frames_per_scene: 2
point_spacing: 0.05
test_scenes: 3
pretrain_runs: 2
pretrain_iterations: 2
max_voxels: 2000
curve_seeds: 2
pilot_pairs: 2
jobs: 1
cells:
  - {{key: f0.5, curve: [3], budget: 3, pairs: 2}}
  - {{key: full, curve: [3], budget: 3, pairs: 2}}
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    repo = tmp_path_factory.mktemp("protocol")
    git(repo, "init", "-q")
    path = repo / "segmentation.yaml"
    path.write_text(PROTOCOL.format(status="fixed"))
    git(repo, "add", "segmentation.yaml")
    git(repo, "commit", "-q", "-m", "protocol")
    out = tmp_path_factory.mktemp("bench")
    results = run(load_protocol(path), path, out, until="confirm")
    return path, out, results


def test_the_test_world_is_apart(bench):
    _, out, results = bench
    world, test = out / "world", out / TEST_WORLD
    train_val = {n for split in ("train", "val") for n in (world / "splits" / f"{split}.txt").read_text().split()}
    test_names = (test / "splits" / "test.txt").read_text().split()
    assert len(test_names) == 3 and not set(test_names) & train_val
    assert not (test / "frames").exists()  # no frame of a test scene exists to pretrain on
    coords = [np.load(p / "coord.npy") for p in sorted((world / "scenes").iterdir())]
    for name in test_names:  # another world seed: no test scene repeats a train / val scene
        c = np.load(test / "scenes" / name / "coord.npy")
        assert not any(c.shape == w.shape and np.array_equal(c, w) for w in coords)
    train = set((world / "splits" / "train.txt").read_text().split())
    pretrains = results.select(stage="pretrain")
    assert len(pretrains) == 2
    for r in pretrains:
        frames = {Path(p).name for p in r["settings"]["config"]["data"]["roots"]}
        assert frames == train and not frames & set(test_names)
    # the tuning stages read the world's val split only; every confirmatory run is scored on the test world
    for r in results.select(stage="curve"):
        assert r["settings"]["config"]["data"]["val_split"] == "val" and "test_miou" not in r
    confirm = results.select(stage="confirm")
    assert len(confirm) == 8 and all(0.0 <= r["test_miou"] <= 1.0 for r in confirm)
    # pair i fine-tunes the backbone of pretraining run i mod 2
    assert {(r["pair"], r["pretrain_run"]) for r in confirm if r["init"] == "ppkt"} == {(0, 0), (1, 1)}


def test_summary_floors_and_pages(bench, tmp_path):
    path, _, results = bench
    protocol = load_protocol(path)
    s = summary(results, "full", protocol.margin)
    assert s["pairs"] == 2 and s["pretrain_runs"] == 2 and set(s["floors"]) == {"lookup", "knn"}
    text = write_confirm_page(results, protocol, tmp_path / "page.md")
    assert results.records["protocol"]["commit"] in text and "| all labels | mIoU | 3 (before the plateau) | 2 (2) |" in text
    r = results.records["confirm/full/ppkt_s1000"]
    assert f"`confirm/full/ppkt_s1000` {100 * r['test_miou']:.1f}" in text  # every run by id with its score
    tuning = write_tuning_page(results, protocol, tmp_path / "tuning.md")
    # the pilot: the 2 seeds at the chosen budget 3, their paired differences on val and Stein's pairs
    runs = {(r["init"], r["seed"]): 100 * r["miou"] for r in results.select(stage="curve", cell="full", budget=3)}
    diffs = [runs["ppkt", s] - runs["scratch", s] for s in (0, 1)]
    assert "- full at 3 iterations: 2 pairs on val, PPKT - scratch " + ", ".join(f"{x:+.1f}" for x in diffs) in tuning
    assert (tmp_path / "images" / "tuning.png").is_file()


def test_confirm_needs_a_fixed_committed_protocol(bench, tmp_path):
    path, out, _ = bench
    draft = tmp_path / "draft.yaml"
    draft.write_text(PROTOCOL.format(status="draft"))
    with pytest.raises(UserError, match="fixed protocol"):
        run(load_protocol(draft), draft, out, until="confirm")
    path.write_text(path.read_text() + "# edited after the commit\n")
    try:
        with pytest.raises(UserError, match="committed, unchanged"):
            run(load_protocol(path), path, out, until="confirm")
    finally:
        git(path.parent, "checkout", "--", path.name)


def test_info_on_the_results(bench, capsys):
    from ppkt.cli import main

    _, out, results = bench
    assert main(["info", str(out / "results.json")]) == 0
    text = capsys.readouterr().out
    assert "ppkt benchmark results" in text and f"records: {len(results.records)} (world 2, pretrain 2" in text


def test_records_seeded_into_another_folder_are_reused_there(bench, tmp_path):
    path, out, results = bench
    moved = tmp_path / "elsewhere" / "segmentation"
    assert seed_results(out / "results.json", moved) == len(results.records)
    again = run(load_protocol(path), path, moved, until="curves")  # worlds and pretraining made again: the same
    curves = {n: r["finished"] for n, r in results.records.items() if r.get("stage") == "curve"}
    assert curves and {n: again.records[n]["finished"] for n in curves} == curves  # every curve run reused
    assert again.records["curve/full@3/ppkt_s0"]["settings"]["config"]["train"]["out_dir"].startswith(str(moved))


def test_rerun_reproduces_a_recorded_score(bench, tmp_path):
    _, _, results = bench
    r = rerun(results, "confirm/f0.5/ppkt_s1001", tmp_path / "again", load_protocol(bench[0]))
    assert r["score"] == "test_miou" and r["rerun"] == pytest.approx(r["recorded"], abs=1e-9)


DETECTION = """name: detection
task: detection
status: {status}
scenes: 5
frames_per_scene: 2
point_spacing: 0.05
test_scenes: 2
student: [8, 16, 16, 16, 16, 16, 16, 16]
pretrain_runs: 1
pretrain_iterations: 2
recipe: [optim.name=adamw, optim.lr=0.002, eval.min_score=0.0]
max_voxels: 2000
curve_seeds: 1
pilot_pairs: 1
jobs: 1
overfit_scenes: 2
overfit_iterations: 4
overfit_eval_every: 2
cells:
  - {{key: full, curve: [2], budget: 2, pairs: 2}}
"""


def test_detection_protocol_scores_both_maps_on_the_test_world(tmp_path, monkeypatch):
    git(tmp_path, "init", "-q")
    path = tmp_path / "detection.yaml"
    path.write_text(DETECTION.format(status="fixed"))
    git(tmp_path, "add", "detection.yaml")
    git(tmp_path, "commit", "-q", "-m", "protocol")
    import ppkt.benchmark.confirm as confirm_module

    # the tiny detector cannot reach the real thresholds in 4 iterations: the run stops before any comparison ...
    with pytest.raises(RunFailed, match="does not fit the scenes it trains on"):
        run(load_protocol(path), path, tmp_path / "bench", until="confirm")
    overfit = Results(tmp_path / "bench" / "results.json").records["overfit"]
    assert overfit["passed"] is False and [i for i, _, _ in overfit["curve"]] == [2, 4]
    assert overfit["settings"]["config"]["data"]["augment"] is False and len(overfit["settings"]["scenes"]) == 2
    # the diagnosis: farthest-point sampling keeps its first picks, so more proposals reach at least the same boxes
    recall = [overfit["diagnosis"][n]["recall"] for n in ("256", "512", "1024")]
    assert 0 <= recall[0] <= recall[1] <= recall[2] <= 1
    # ... and passes on a bar it can reach, then the comparison runs
    monkeypatch.setattr(confirm_module, "OVERFIT", {"map25": 0.0, "map50": 0.0})
    results = run(load_protocol(path), path, tmp_path / "bench", until="confirm")
    assert results.records["overfit"]["first"] == 2
    confirm = results.select(stage="confirm")
    assert len(confirm) == 4 and all(0 <= r["test_map50"] <= 1 and 0 <= r["test_map25"] <= 1 for r in confirm)
    assert {r["settings"]["config"]["data"]["label_fraction"] for r in confirm} == {1.0}
    assert not results.select(stage="floor")  # the floors are per-point classifiers: segmentation only
    text = write_confirm_page(results, load_protocol(path), tmp_path / "page.md")
    assert "| detection, all labels | mAP@0.25 | 2 (before the plateau) | 2 (1) |" in text
    assert "| detection, all labels | mAP@0.5 |" in text
    with pytest.raises(UserError, match="detection cells"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(DETECTION.format(status="draft").replace("key: full", "key: p20"))
        load_protocol(bad)
