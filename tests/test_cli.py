"""The `ppkt` command: help without torch, options and overrides in any order, `ppkt config`, errors, progress."""
import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppkt import cli
from ppkt.commands import HelpFormatter, synth
from ppkt.config import PretrainConfig, config_to_yaml, load_config
from ppkt.errors import Interrupted
from ppkt.progress import Progress
from ppkt.train.detect_config import DetectionConfig
from ppkt.train.finetune_config import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]


def command_parsers(parser: argparse.ArgumentParser, path=()):
    """(argv prefix, parser) of `ppkt` and of every sub-command, nested ones included (aliases once each)."""
    yield list(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from command_parsers(sub, (*path, name))


def run_ppkt(capsys, *argv):
    """(exit status, stdout, stderr) of `ppkt ARGV`, through cli.main."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ help
HELP_SCRIPT = r"""
import contextlib, io, sys
from ppkt.cli import build_parser
sys.path.insert(0, {tests!r})
from test_cli import command_parsers

paths = [path for path, _ in command_parsers(build_parser())]
for path in paths:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            build_parser().parse_args(path + ["--help"])
        except SystemExit as stop:
            assert stop.code == 0, (path, stop.code, out.getvalue())
    assert out.getvalue().startswith("usage: ppkt"), (path, out.getvalue())
print(len(paths), " | ".join(" ".join(p) for p in paths))
print("torch imported:", "torch" in sys.modules)
"""


def test_help_of_every_command_and_subcommand_answers_without_importing_torch():
    script = HELP_SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    count, _, listed = done.stdout.splitlines()[0].partition(" ")
    for command in ("pretrain", "config", "frames", "synth", "teacher train", "teacher evaluate", "finetune",
                    "evaluate", "pointcept export", "pointcept import", "prepare scannet", "prepare scannet-scenes",
                    "prepare s3dis", "prepare sunrgbd", "cache-teacher", "overlaps", "benchmark pilot", "benchmark transfer", "benchmark detection",
                    "benchmark ablations", "figures tsne", "figures pca",
                    "figures curves", "predict", "info"):
        assert command in listed.split(" | ")
    assert int(count) == 31  # ppkt, its 15 commands, 15 sub-commands
    assert done.stdout.splitlines()[1] == "torch imported: False"


def test_every_option_of_every_command_has_help_and_shows_its_default():
    parser = cli.build_parser()
    for path, p in command_parsers(parser):
        assert issubclass(p.formatter_class, argparse.ArgumentDefaultsHelpFormatter), path
        for action in p._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help and action.help.strip(), (path, action.option_strings)
                assert "(default " not in action.help, (path, action.option_strings)  # argparse adds the default
    help_of = {" ".join(path): p.format_help() for path, p in command_parsers(parser)}
    assert "(default: 800)" in help_of["teacher train"] and "(default: resnet18)" in help_of["teacher train"]
    assert "(default: 40)" in help_of["synth"] and "(default: auto)" in help_of["evaluate"]
    assert "(default: None)" not in "".join(help_of.values())


def test_help_formatter_keeps_help_of_required_options_and_flags_unchanged():
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--a", required=True, help="needed")
    p.add_argument("--b", action="store_true", help="a flag")
    p.add_argument("--c", type=int, default=3, help="a number")
    text = " ".join(p.format_help().split())
    assert "needed --b" in text and "a flag --c" in text and "a number (default: 3)" in text


# ------------------------------------------------------------------------------------------------ arguments
def test_overrides_may_come_before_between_and_after_the_options():
    parser = cli.build_parser()
    ordered = cli.parse_args(parser, ["finetune", "--config", "X", "--pretrained", "Y", "--resume", "a.b=1", "c.d=2"])
    mixed = cli.parse_args(parser, ["finetune", "a.b=1", "--config", "X", "--pretrained", "Y", "c.d=2", "--resume"])
    assert vars(mixed) == vars(ordered) and ordered.overrides == ["a.b=1", "c.d=2"]
    mixed = cli.parse_args(parser, ["pretrain", "a=1", "--config", "X", "b.c=[1,2]", "--overwrite", "d=3"])
    assert mixed.overrides == ["a=1", "b.c=[1,2]", "d=3"] and mixed.overwrite and not mixed.resume
    mixed = cli.parse_args(parser, ["config", "--kind", "finetune", "a=1", "--config", "X", "b=2"])
    assert mixed.overrides == ["a=1", "b=2"] and mixed.config == "X" and mixed.kind == "finetune"


def test_an_argument_that_is_neither_an_option_nor_an_override_is_refused(capsys):
    code, _, err = run_ppkt(capsys, "finetune", "--config", "X", "a=1", "--bogus", "b=2")
    assert code == 2 and "unrecognized arguments: --bogus" in err
    code, _, err = run_ppkt(capsys, "synth", "--out", "x", "a=1")  # synth takes no overrides
    assert code == 2 and "unrecognized arguments: a=1" in err
    code, _, err = run_ppkt(capsys, "pretrain", "--config", "X", "--resume", "--overwrite")
    assert code == 2 and "not allowed with argument" in err


def test_teacher_eval_is_an_alias_of_teacher_evaluate():
    parser = cli.build_parser()
    a = cli.parse_args(parser, ["teacher", "evaluate", "--checkpoint", "c.pt", "--data", "d"])
    b = cli.parse_args(parser, ["teacher", "eval", "--checkpoint", "c.pt", "--data", "d"])
    assert a.func is b.func and a.checkpoint == b.checkpoint == "c.pt"


# ------------------------------------------------------------------------------------------------ ppkt config
@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_prints_every_shipped_config_and_the_output_loads_back(path, tmp_path, capsys):
    schema = (FinetuneConfig if path.name.startswith("finetune_") else DetectionConfig if path.name.startswith("detection_")
              else PretrainConfig)
    code, out, err = run_ppkt(capsys, "config", "--config", path)
    assert code == 0, err
    (tmp_path / "printed.yaml").write_text(out)
    assert load_config(tmp_path / "printed.yaml", (), schema) == load_config(path, (), schema)
    code, out, _ = run_ppkt(capsys, "config", "train.iterations=7", "--config", path, "train.seed=5")
    (tmp_path / "printed.yaml").write_text(out)
    cfg = load_config(tmp_path / "printed.yaml", (), schema)
    assert code == 0 and cfg.train.iterations == 7 and cfg.train.seed == 5
    assert cfg == load_config(path, ["train.iterations=7", "train.seed=5"], schema)


def test_config_without_a_file_prints_the_defaults_of_the_chosen_kind(capsys, tmp_path):
    assert run_ppkt(capsys, "config")[:2] == (0, config_to_yaml(PretrainConfig()))
    assert run_ppkt(capsys, "config", "--kind", "finetune")[:2] == (0, config_to_yaml(FinetuneConfig()))
    code, _, err = run_ppkt(capsys, "config", "--config", tmp_path / "missing.yaml")
    assert code == 2 and err == f"ppkt: error: --config: {tmp_path / 'missing.yaml'}: no such file\n"
    code, _, err = run_ppkt(capsys, "config", "--kind", "pretrain", "--config", ROOT / "configs" / "finetune_s3dis.yaml")
    assert code == 2 and err == (f"ppkt: error: {ROOT / 'configs' / 'finetune_s3dis.yaml'}: this is a segmentation "
                                 "fine-tuning config (`ppkt finetune` takes it), not a pretraining config\n")


@pytest.mark.parametrize("text, overrides, message", [
    ("train:\n  batch_size: [1\n", [], "{f}:3: not valid YAML: expected ',' or ']'"),
    ("- data\n- train\n", [], "{f}: the top level must be a mapping of sections (data:, model:, train:, ...), not a list"),
    ("train:\n  iterations: 5\n  batch_size: abc\n", [], "{f}:3: train.batch_size: 'abc' is not a whole number"),
    ("train:\n  batch_sise: 4\n", [], "{f}:2: train.batch_sise: no such key (did you mean batch_size?)"),
    ("", ["train.batch_size=abc"], "override train.batch_size=abc: train.batch_size: 'abc' is not a whole number"),
    ("", ["train.amp=maybe"], "override train.amp=maybe: train.amp: 'maybe' is not true or false"),
    ("model:\n  arch: SR-UNet14\neval:\n  ply: false\n", ["--kind", "pretrain"],
     "{f}: this is a detection fine-tuning config (`ppkt finetune --task detection` takes it), not a pretraining config"),
])
def test_a_config_problem_names_its_file_and_line_or_its_override_and_the_key(text, overrides, message, tmp_path,
                                                                              capsys):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    code, _, err = run_ppkt(capsys, "config", "--config", f, *overrides)
    assert code == 2 and err.startswith("ppkt: error: " + message.format(f=f)), err
    assert "reference_type" not in err and "object_type" not in err and "Traceback" not in err


def test_a_single_value_where_a_list_is_expected_is_a_one_element_list(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  roots: /scans/a\n")
    assert load_config(f).data.roots == ["/scans/a"]
    assert load_config(None, ["data.roots=/scans/b"]).data.roots == ["/scans/b"]
    assert load_config(None, ["data.roots=[/a,/b]"]).data.roots == ["/a", "/b"]


# ------------------------------------------------------------------------------------------------ errors
def test_user_message_strips_the_dataloader_worker_wrapper(capsys, monkeypatch):
    from torch.utils.data import DataLoader, Dataset

    from ppkt.data.scenes import SceneError

    class Broken(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise SceneError(f"scene_{i:04d}/coord.npy: missing")

    with pytest.raises(SceneError) as caught:
        next(iter(DataLoader(Broken(), num_workers=1)))
    wrapped = caught.value
    assert str(wrapped).startswith("Caught SceneError in DataLoader worker process 0.")  # torch's wrapper
    assert cli.user_message(wrapped) == "scene_0000/coord.npy: missing"
    assert cli.user_message(SceneError("plain\nmessage")) == "plain\nmessage"

    def raise_it(args):
        raise wrapped

    monkeypatch.setattr(synth, "check_synth_args", raise_it)
    code, out, err = run_ppkt(capsys, "synth", "--out", "x")
    assert (code, out, err) == (2, "", "ppkt: error: scene_0000/coord.npy: missing\n")


@pytest.mark.parametrize("raised, code, message", [
    (KeyboardInterrupt(), 130, "ppkt: interrupted\n"),
    (Interrupted("stopped by SIGTERM at iteration 4; saved last.pt, resume with --resume", 15), 143,
     "ppkt: stopped by SIGTERM at iteration 4; saved last.pt, resume with --resume\n"),
])
def test_interruptions_print_one_line_and_exit_with_the_signal_status(raised, code, message, capsys, monkeypatch):
    def raise_it(args):
        raise raised

    monkeypatch.setattr(synth, "check_synth_args", raise_it)
    assert run_ppkt(capsys, "synth", "--out", "x") == (code, "", message)


@pytest.mark.parametrize("args, message", [
    (["--scenes", "0"], "--scenes: must be >= 1, got 0"),
    (["--frames-per-scene", "-2"], "--frames-per-scene: must be >= 1, got -2"),
    (["--image-size", "0", "320"], "--image-size: must be >= 2, got 0"),
    (["--point-spacing", "0"], "--point-spacing: must be a finite number > 0, got 0"),
    (["--point-spacing", "nan"], "--point-spacing: must be a finite number > 0, got nan"),
    (["--workers", "0"], "--workers: must be >= 1, got 0"),
])
def test_synth_refuses_bad_values_before_creating_anything(args, message, tmp_path, capsys):
    out = tmp_path / "data"
    assert run_ppkt(capsys, "synth", "--out", out, *args) == (2, "", f"ppkt: error: {message}\n")
    assert not out.exists()


def test_synth_in_a_pipe_prints_progress_lines_on_stderr_and_the_result_on_stdout(tmp_path, capsys):
    out = tmp_path / "data"
    code, printed, err = run_ppkt(capsys, "synth", "--out", out, "--scenes", "2", "--frames-per-scene", "2",
                                  "--image-size", "24", "32", "--point-spacing", "0.1", "--workers", "1")
    assert code == 0 and printed == f"wrote {out}: frames in {out / 'frames'}, labelled scenes in {out / 'scenes'}\n"
    assert err == "synth 2/4  scenes 1/2\nsynth 4/4  scenes 2/2\n"


def test_synth_refuses_an_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, out, err = run_ppkt(capsys, "synth", "--out", tmp_path / "file", "--scenes", "1")
    assert code == 2 and err == f"ppkt: error: --out: {tmp_path / 'file'} is a file; give a folder\n"


# ------------------------------------------------------------------------------------------------ progress
class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_file_prints_one_plain_line_per_report():
    stream = io.StringIO()
    with Progress(200, "pretrain", stream=stream) as progress:
        progress.update(10)
        progress.report(loss=6.21345, lr=0.09981, fps=7.3)
        progress.update(5)  # no line: updates only move a bar
        progress.write("a message")
        progress.report(20, loss=5.5)
    assert stream.getvalue() == ("pretrain 10/200  loss 6.213  lr 0.09981  fps 7.3\na message\n"
                                 "pretrain 20/200  loss 5.5\n")
    assert "\r" not in stream.getvalue()
    quiet = io.StringIO()
    with Progress(3, "x", stream=quiet, enabled=False) as progress:
        progress.report(1, loss=1.0)
        progress.write("still shown")
    assert quiet.getvalue() == "still shown\n"


def test_progress_on_a_terminal_draws_a_bar_and_ends_its_line_when_the_block_fails():
    for leave in (True, False):
        stream = Terminal()
        with pytest.raises(ValueError):
            with Progress(10, "teacher2d", stream=stream, leave=leave) as progress:
                progress.update(3)
                progress.report(loss=1.25)
                raise ValueError("boom")
        text = stream.getvalue()
        assert "\r" in text and "3/10" in text and "loss=1.25" in text
        assert text.endswith("\n") if leave else text.endswith("\r")  # what follows starts a line


def test_synth_refuses_a_spacing_that_no_room_can_hold_before_creating_anything(tmp_path, capsys):
    code, _, err = run_ppkt(capsys, "synth", "--out", tmp_path / "w", "--point-spacing", "1e-5")
    # 310k points at 2.5 cm, x (0.025 / 1e-5)^2 = 1.94e12; the smallest spacing for 20 M points: 0.025 * sqrt(0.0155)
    assert code == 2 and "--point-spacing: 1e-05 m would sample up to 1.94e+12 points a room" in err
    assert "use >= 0.003 m" in err and not (tmp_path / "w").exists()


def test_a_bug_is_one_message_saying_how_to_see_and_report_it_and_ppkt_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "check_paths", lambda args: None)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(func=broken)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.choices["info"].set_defaults(func=broken)
    monkeypatch.delenv("PPKT_DEBUG", raising=False)
    code, _, err = run_ppkt(capsys, "info", "x")
    assert code == 1 and "ppkt: internal error: KeyError: 'boom'" in err and "PPKT_DEBUG=1" in err
    assert "issue tracker" in err and "Traceback" not in err
    monkeypatch.setenv("PPKT_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["info", "x"])


def test_ctrl_c_during_a_parallel_synth_stops_the_workers_within_seconds(tmp_path):
    """The real command in its own process group: SIGINT once the first scene is done; exit 130 at once, no worker
    left rendering (a plain ProcessPoolExecutor went on with the 38 queued scenes for 35 s)."""
    out = tmp_path / "world"
    cmd = [sys.executable, "-m", "ppkt.cli", "synth", "--out", str(out), "--scenes", "40", "--frames-per-scene", "6",
           "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    first = proc.stderr.readline()  # the first progress line: a scene is done, the others are under way
    assert first.startswith("synth "), first
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group gets it
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 5 and proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    time.sleep(1)
    assert subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).stdout.strip() == b""  # no worker left
    assert json.loads((out / "dataset.json").read_text())["complete"] is False  # a partial world never looks finished
