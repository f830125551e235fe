"""The catalogue of bad input, command by command: each case is one line `ppkt: error: ...` naming the option, key or
file, exit status 2 (a user's mistake), no traceback, and nothing left behind in the folder it ran in.

The general forms: a count out of range, a number that is not finite, an output file that is a folder, an output
folder that is a file, an input that does not exist, YAML that does not parse, a config of the other kind, an override
of the wrong type or of no key, a renamed key, an unwritable output folder."""
import os
from pathlib import Path

import pytest

from ppkt.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "pretrain_demo.yaml")
SEG = str(ROOT / "configs" / "finetune_synthetic.yaml")
FRAMES = str(ROOT / "data" / "7scenes-redkitchen")

# (id, argv with {t} = the case's folder, the text the error line holds); every case runs in an empty folder {t}
# holding only `file` (a file), `folder/` (a folder) and `bad.yaml` (a YAML file that does not parse)
CASES = [
    ("unknown command", ["pretrian"], "COMMAND: invalid choice: 'pretrian'"),
    ("unknown option", ["synth", "--out", "{t}/w", "--scene", "3"], "unrecognized arguments: --scene 3"),
    # counts, numbers, fractions
    ("synth count 0", ["synth", "--out", "{t}/w", "--scenes", "0"], "--scenes: must be >= 1, got 0"),
    ("synth count not a number", ["synth", "--out", "{t}/w", "--workers", "two"], "--workers: must be a whole number"),
    ("synth spacing nan", ["synth", "--out", "{t}/w", "--point-spacing", "nan"], "--point-spacing: must be a finite"),
    ("synth frames too large", ["synth", "--out", "{t}/w", "--image-size", "10", "10000000"], "--image-size: 10 x"),
    ("a list for one value", ["finetune", "--config", SEG, "data.root=[a,b]"], "data.root: takes one value, not a list"),
    ("synth spacing too small", ["synth", "--out", "{t}/w", "--point-spacing", "1e-5"], "would sample up to"),
    ("teacher batch 0", ["teacher", "train", "--data", FRAMES, "--out", "{t}/t.pt", "--batch-size", "0"],
     "--batch-size: must be >= 1, got 0"),
    ("teacher lr -1", ["teacher", "train", "--data", FRAMES, "--out", "{t}/t.pt", "--lr", "-1"], "--lr: must be"),
    ("cache batch 0", ["cache-teacher", "--config", DEMO, "--out", "{t}/c", "--batch-size", "0"],
     "--batch-size: must be >= 1, got 0"),
    ("predict tile 0", ["predict", "--checkpoint", "{t}/file", "{t}/file", "--out", "{t}/p", "--tile", "0"],
     "--tile: must be a finite number > 0, got 0"),
    ("predict min-score 2", ["predict", "--checkpoint", "{t}/file", "{t}/file", "--out", "{t}/p", "--min-score", "2"],
     "--min-score: must be a finite number >= 0 and <= 1, got 2"),
    ("overlaps min-overlap 1.5", ["overlaps", FRAMES, "--out", "{t}/o.tsv", "--min-overlap", "1.5"], "--min-overlap:"),
    ("prepare workers 0", ["prepare", "scannet", "--scans", "{t}/folder", "--out", "{t}/f", "--workers", "0"],
     "--workers: must be >= 1, got 0"),
    ("pilot seeds 1", ["benchmark", "pilot", "--data", "{t}/folder", "--out", "{t}/p", "--seeds", "1"],
     "--seeds: must be >= 2, got 1"),
    # files and folders
    ("output file is a folder", ["pointcept", "export", "--backbone", "{t}/file", "--out", "{t}/folder"],
     "--out: {t}/folder is a folder; give a file name"),
    ("output folder is a file", ["synth", "--out", "{t}/file"], "--out: {t}/file is a file; give a folder"),
    ("output under a file", ["teacher", "train", "--data", FRAMES, "--out", "{t}/file/t.pt"], "{t}/file is a file"),
    ("output under an unwritable folder", ["figures", "curves", "{t}/folder", "--out", "/proc/sys/x/c.png"],
     "is not writable"),
    ("evaluate without a checkpoint", ["evaluate"], "--checkpoint: required"),
    ("detection evaluate without either", ["evaluate", "--task", "detection"], "--checkpoint / --predictions: give one"),
    ("input file missing", ["evaluate", "--checkpoint", "{t}/none.pt"], "--checkpoint: {t}/none.pt: no such file"),
    ("input folder missing", ["overlaps", "{t}/none", "--out", "{t}/o.tsv"], "ROOT: {t}/none: no such folder"),
    ("input folder is a file", ["teacher", "train", "--data", "{t}/file", "--out", "{t}/t.pt"],
     "--data: {t}/file is a file; give a folder"),
    ("config missing", ["pretrain", "--config", "{t}/none.yaml"], "--config: {t}/none.yaml: no such file"),
    ("info of a missing file", ["info", "{t}/none.pt"], "{t}/none.pt: no such file"),
    ("not a world", ["benchmark", "pilot", "--data", "{t}/folder", "--out", "{t}/p"], "is not a synthetic world"),
    ("results missing", ["benchmark", "transfer", "report", "--out", "{t}/b"], "{t}/b/results.json: not found"),
    # configs
    ("YAML that does not parse", ["pretrain", "--config", "{t}/bad.yaml"], "{t}/bad.yaml:3: not valid YAML"),
    ("a fine-tuning config to pretrain", ["pretrain", "--config", SEG], "this is a segmentation fine-tuning config"),
    ("a pretraining config to finetune", ["finetune", "--config", DEMO], "this is a pretraining config (`ppkt pretrain`"),
    ("override of the wrong type", ["pretrain", "--config", DEMO, "train.batch_size=abc"],
     "override train.batch_size=abc: train.batch_size: 'abc' is not a whole number"),
    ("override of no key", ["pretrain", "--config", DEMO, "train.batchsize=4"], "train.batchsize: no such key"),
    ("renamed key", ["pretrain", "--config", DEMO, "data.pairs=x.tsv"], "data.pairs is now called data.overlaps"),
    ("a voxel no room can use", ["finetune", "--config", SEG, "data.voxel_size=5"],
     "data.voxel_size: must be > 0 and <= 0.5 metres"),
    ("no labels", ["finetune", "--config", SEG, "data.limited_points=0"], "data.limited_points: must be null"),
    ("unwritable out_dir", ["pretrain", "--config", DEMO, f"data.roots=[{FRAMES}]", "train.out_dir=/proc/x"],
     "/proc/x: cannot make it"),
    ("out_dir under a file", ["pretrain", "--config", DEMO, "train.out_dir={t}/file/run"], "{t}/file is a file"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_it_exit_2_and_nothing_written(argv, message, tmp_path, capsys, monkeypatch):
    t = tmp_path / "case"
    (t / "folder").mkdir(parents=True)
    (t / "file").write_text("not what is expected\n")
    (t / "bad.yaml").write_text("train:\n  batch_size: [1\n")
    before = sorted(p.relative_to(t) for p in t.rglob("*"))
    monkeypatch.chdir(t)
    try:
        code = main([a.replace("{t}", str(t)) for a in argv])
    except SystemExit as stop:  # argparse's own errors leave through sys.exit
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ppkt: error: ") and message.replace("{t}", str(t)) in err, err
    assert "Traceback" not in err and "reference_type" not in err
    assert sorted(p.relative_to(t) for p in t.rglob("*")) == before  # nothing written


def test_a_worker_that_dies_is_a_failure_of_the_work_not_a_bug(capsys):
    import os as _os

    from ppkt.errors import RunFailed
    from ppkt.pool import process_pool

    with pytest.raises(RunFailed, match="a worker process died"):
        with process_pool(1) as pool:
            pool.submit(_os._exit, 9).result()
