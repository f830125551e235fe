"""State-dict checks of ppkt.checkpoint: the key comparison shared by every loader, and load_state_strict's error."""
import pytest
import torch
from torch import nn

from ppkt.checkpoint import CheckpointError, compare_state_dicts, load_state_strict


def small():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # keys 0.weight/bias, 1.weight/bias/running_*/num_batches_tracked


def test_compare_lists_each_kind_of_difference():
    own = small().state_dict()
    state = {k: v.clone() for k, v in own.items()}
    state["0.weight"] = torch.zeros(5, 3)  # wrong shape
    del state["1.bias"], state["1.num_batches_tracked"]  # missing
    state["2.weight"] = torch.zeros(1)  # unexpected
    diff = compare_state_dicts(state, own)
    assert diff.mismatched == [("0.weight", (5, 3), (4, 3))]
    assert diff.missing == ["1.bias", "1.num_batches_tracked"]
    assert diff.unexpected == ["2.weight"]
    assert diff.matched == ["0.bias", "1.weight", "1.running_mean", "1.running_var"]
    assert diff.problems() == ["missing keys (2): 1.bias, 1.num_batches_tracked", "unexpected keys (1): 2.weight",
                               "shape mismatches (1): 0.weight: file (5, 3) vs model (4, 3)"]
    optional = compare_state_dicts(state, own, optional=lambda k: k.endswith("num_batches_tracked"))
    assert optional.missing == ["1.bias"]
    assert compare_state_dicts(own, own).problems() == []


def test_problem_lines_show_five_keys_then_dots():
    own = {f"k{i}": torch.zeros(1) for i in range(7)}
    assert compare_state_dicts({}, own).problems() == ["missing keys (7): k0, k1, k2, k3, k4 ..."]
    assert compare_state_dicts({}, own).problems(shown=2) == ["missing keys (7): k0, k1 ..."]


def test_load_state_strict_names_the_file_and_the_keys(tmp_path):
    model, other = small(), nn.Sequential(nn.Linear(3, 5))
    with pytest.raises(CheckpointError) as err:
        load_state_strict(model, other.state_dict(), tmp_path / "last.pt", "model")
    lines = str(err.value).splitlines()
    assert lines[0] == f"{tmp_path / 'last.pt'}: the model in this file does not fit the model built from the config"
    assert lines[1].startswith("  missing keys (5): 1.weight, 1.bias")
    assert lines[2] == "  shape mismatches (2): 0.weight: file (5, 3) vs model (4, 3), 0.bias: file (5,) vs model (4,)"
    state = {k: torch.full_like(v, 2) for k, v in small().state_dict().items()}
    load_state_strict(model, state, "x.pt", "model")
    assert torch.equal(model[0].weight, torch.full((4, 3), 2.0))


def test_a_file_without_ppkts_format_tag_given_as_a_backbone_points_to_the_converter(tmp_path):
    from ppkt.checkpoint import BACKBONE_FORMAT, load_checkpoint

    path = tmp_path / "pointcept.pth"
    torch.save({"state_dict": {"backbone.conv_input.0.weight": torch.zeros(1)}}, path)  # as Pointcept saves weights
    with pytest.raises(CheckpointError, match=r"found None .*`ppkt pointcept import --checkpoint .*pointcept.pth"):
        load_checkpoint(path, BACKBONE_FORMAT)
    with pytest.raises(CheckpointError, match="without ppkt's format tag: not written by ppkt"):
        load_checkpoint(path, "ppkt-finetune")


def test_a_checkpoint_holding_pickled_code_is_refused_without_advice_to_allow_it(tmp_path):
    from ppkt.checkpoint import load_checkpoint

    path = tmp_path / "code.pt"
    torch.save({"format": "ppkt-finetune", "hook": print}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, "ppkt-finetune")
    message = str(err.value)
    assert "holds pickled code or objects other than tensors and plain data (print)" in message
    assert "safe_globals" not in message and "weights_only" not in message
