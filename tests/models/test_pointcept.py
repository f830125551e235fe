"""A ppkt export becomes a Pointcept weight file and back, unchanged; foreign files fail clearly."""
import pytest
import torch

from ppkt.cli import main as cli_main
from ppkt.models.pointcept import from_pointcept, to_pointcept
from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.checkpoint import BACKBONE_FORMAT, CheckpointError, load_checkpoint, save_atomic

TINY_WIDTHS = [8, 16, 16, 32, 32, 16, 16, 16]


def _export(arch="SR-UNet18"):
    torch.manual_seed(0)
    net = build_sparse_unet(arch, 3, TINY_WIDTHS)
    return {"format": BACKBONE_FORMAT, "arch": arch, "in_channels": 3, "channels": TINY_WIDTHS, "state_dict": net.state_dict(), "pretrain": {}}


def test_export_uses_pointcept_backbone_keys_and_imports_back():
    export = _export()
    pc = to_pointcept(export)
    assert all(k.startswith("backbone.") for k in pc["state_dict"])
    assert "backbone.conv_input.0.weight" in pc["state_dict"]
    # as a Pointcept training run saves it: DDP prefix, the segmentor's classifier inside the backbone
    saved = {"state_dict": {"module." + k: v for k, v in pc["state_dict"].items()}}
    saved["state_dict"]["module.backbone.final.weight"] = torch.zeros(20, 16)
    back = from_pointcept(saved, "pointcept.pth")
    assert (back["arch"], back["in_channels"], back["channels"]) == ("SR-UNet18", 3, TINY_WIDTHS)
    assert back["state_dict"].keys() == export["state_dict"].keys()
    assert all(torch.equal(back["state_dict"][k], v) for k, v in export["state_dict"].items())


def test_import_of_a_foreign_checkpoint_fails_clearly():
    with pytest.raises(CheckpointError, match="no SpUNet-v1m1 backbone"):
        from_pointcept({"state_dict": {"backbone.layer1.weight": torch.zeros(1)}}, "other.pth")


def test_cli_round_trip(tmp_path, capsys):
    src = save_atomic(_export("SR-UNet14"), tmp_path / "backbone.pth")
    assert cli_main(["pointcept", "export", "--backbone", str(src), "--out", str(tmp_path / "pc.pth")]) == 0
    assert cli_main(["pointcept", "import", "--checkpoint", str(tmp_path / "pc.pth"), "--out", str(tmp_path / "back.pth")]) == 0
    back = load_checkpoint(tmp_path / "back.pth", BACKBONE_FORMAT)
    assert back["arch"] == "SR-UNet14" and back["channels"] == TINY_WIDTHS
    capsys.readouterr()
    assert cli_main(["info", str(tmp_path / "pc.pth")]) == 0
    text = capsys.readouterr().out
    assert "Pointcept checkpoint (SpUNet-v1m1 backbone keys) exported by ppkt" in text and "arch: SR-UNet14" in text
    assert "written by: ppkt" in text
    assert cli_main(["pointcept", "import", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "x.pth")]) == 2
    assert "missing.pth" in capsys.readouterr().err
