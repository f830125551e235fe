"""Linear probe of frozen features (model.freeze_backbone): the backbone's weights stay bit-identical and get no
gradient, its batch-norm statistics adapt, only the head is optimised; runs resume exactly and evaluate as before."""
import pytest
import torch
import torch.nn.functional as F

from test_finetune import CHANNELS, NAMES, backbone_file, tiny_config, tiny_dataset

from ppkt.config import ConfigError
from ppkt.data.scenes import SegScenes, collate_scenes, list_scenes
from ppkt.models.segmentor import Segmentor
from ppkt.train.evaluate import evaluate_checkpoint
from ppkt.train.finetune import build_model, build_optimizer, finetune
from ppkt.train.finetune_config import validate_finetune
from ppkt.train.logging import read_metrics

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


def batches(data, count: int = 3):
    """`count` batches of the two training scenes (no augmentation: the same voxels every time, seed per batch)."""
    ds = SegScenes(list_scenes(data, "train"), data / "classes.json", voxel_size=0.05, augment=False, max_voxels=3000)
    return [collate_scenes([ds[(0, s)], ds[(1, s)]]) for s in range(count)]


def train_steps(model, optimizer, scheduler, data_batches) -> list:
    """The loop's step (forward, cross-entropy, backward, step) on each batch; returns, per step, whether autograd
    was on inside the backbone's forward."""
    grad_in_backbone = []
    hook = model.backbone.register_forward_pre_hook(lambda *_: grad_in_backbone.append(torch.is_grad_enabled()))
    model.train()
    for batch in data_batches:
        loss = F.cross_entropy(model(batch.feats, batch.coords, batch.batch_size), batch.labels, ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    hook.remove()
    return grad_in_backbone


def is_bn_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def test_frozen_backbone_is_bit_identical_its_statistics_adapt_and_only_the_head_is_optimised(tmp_path, one_thread):
    data = tiny_dataset(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "run", "model.freeze_backbone=true", "optim.head_lr=0.5", "optim.warmup=0")
    torch.manual_seed(0)
    model = build_model(cfg, len(NAMES), torch.device("cpu"))
    optimizer, scheduler = build_optimizer(cfg, model)
    assert [id(p) for g in optimizer.param_groups for p in g["params"]] == [id(model.head.weight), id(model.head.bias)]
    assert [g["lr"] for g in optimizer.param_groups] == [0.5]
    before = {k: v.clone() for k, v in model.state_dict().items()}

    assert train_steps(model, optimizer, scheduler, batches(data)) == [False] * 3  # backbone under torch.no_grad
    after = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    for key in before:
        if key.startswith("backbone.") and key in params:
            assert torch.equal(after[key], before[key]), key  # weights and batch-norm affine parameters
    assert all(p.grad is None for p in model.backbone.parameters())
    bn_stats = [k for k in before if k.startswith("backbone.") and is_bn_stat(k)]
    assert len(bn_stats) > 10
    for key in bn_stats:
        if key.endswith("num_batches_tracked"):
            assert int(after[key] - before[key]) == 3, key
        else:
            assert not torch.equal(after[key], before[key]), key  # the statistics adapt in training mode
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert not torch.equal(after["head.bias"], before["head.bias"])
    assert set(after) == set(Segmentor("SR-UNet14", 3, 3, CHANNELS).state_dict())  # the same saved model

    # the documented probe (backbone lr 0, batch-norm statistics adapt) reaches the same head and statistics
    cfg.model.freeze_backbone, cfg.optim.lr = False, 0.0
    torch.manual_seed(0)
    reference = build_model(cfg, len(NAMES), torch.device("cpu"))
    ref_opt, ref_sched = build_optimizer(cfg, reference)
    assert len(ref_opt.param_groups) == 2  # not frozen: the backbone is optimised too (at lr 0 here)
    assert train_steps(reference, ref_opt, ref_sched, batches(data)) == [True] * 3
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(after[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_probe_run_keeps_the_pretrained_backbone_resumes_exactly_and_evaluates(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    export = torch.load(backbone_file(tmp_path / "backbone.pth"), weights_only=True)["state_dict"]
    args = ["model.freeze_backbone=true", f"model.pretrained={tmp_path / 'backbone.pth'}", "train.iterations=4",
            "train.checkpoint_every=2", "data.val_split=''", "optim.head_lr=0.3"]
    straight = finetune(tiny_config(data, tmp_path / "straight", *args))
    printed = capsys.readouterr()
    assert "linear probe: backbone frozen" in printed.out
    # the progress lines show the rate of what trains (the head), not the frozen backbone's 0
    lines = [line for line in printed.err.splitlines() if line.startswith("finetune ") and " lr " in line]
    assert lines and all(" lr 0 " not in line + " " and not line.endswith(" lr 0") for line in lines)
    state = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    model = state["model"]
    for key, value in export.items():
        if is_bn_stat(key):
            assert not torch.equal(model["backbone." + key], value), key
        else:
            assert torch.equal(model["backbone." + key], value), key
    torch.manual_seed(0)  # train.seed: the head's initial weights
    initial = Segmentor("SR-UNet14", 3, 3, CHANNELS).head
    assert not torch.equal(model["head.weight"], initial.weight) and not torch.equal(model["head.bias"], initial.bias)
    groups = state["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["head"] and len(groups[0]["params"]) == 2
    rows = [r for r in read_metrics(straight / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 4 and all(r["lr"] == 0.0 and r["head_lr"] > 0 for r in rows)

    finetune(tiny_config(data, tmp_path / "stopped", *args), stop_after=2)
    with pytest.raises(ConfigError, match=r"model\.freeze_backbone: True -> False"):
        finetune(tiny_config(data, tmp_path / "stopped", *args, "model.freeze_backbone=false"), resume=True)
    resumed = finetune(tiny_config(data, tmp_path / "stopped", *args), resume=True)
    again = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert again["iteration"] == 4
    for key, value in model.items():
        assert torch.equal(value, again["model"][key]), key

    scores = evaluate_checkpoint(straight / "checkpoints" / "last.pt", data, "val", tmp_path / "eval", "cpu", 0, False)
    assert 0 <= scores["miou"] <= 1 and (tmp_path / "eval" / "metrics.json").is_file()


def test_a_probe_with_nothing_to_train_is_refused_before_any_work(tmp_path):
    cfg = tiny_config(tmp_path / "data", tmp_path / "run", "model.freeze_backbone=true", "optim.head_lr=0")
    with pytest.raises(ConfigError, match=r"model\.freeze_backbone: freezes the backbone and optim\.head_lr is 0"):
        validate_finetune(cfg)
    cfg.model.freeze_backbone, cfg.data.stratified = "yes", 1
    with pytest.raises(ConfigError, match=r"(?s)data\.stratified: must be true or false, got 1.*"
                                          r"model\.freeze_backbone: must be true or false, got 'yes'"):
        validate_finetune(cfg)
    with pytest.raises(ConfigError, match="nothing would train"):
        finetune(tiny_config(tmp_path / "data", tmp_path / "run", "model.freeze_backbone=true", "optim.head_lr=0"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("momentum", [0.01, 0.1])
def test_batch_norm_momentum_of_fine_tuning_sets_every_running_statistic_update(tmp_path, one_thread, momentum):
    """model.bn_momentum: every batch norm of the segmentor; one training forward moves the stem's running mean
    from 0 to momentum * (the batch mean of its input)."""
    data = tiny_dataset(tmp_path / "data")
    model = build_model(tiny_config(data, tmp_path / "run", f"model.bn_momentum={momentum}"), len(NAMES),
                        torch.device("cpu"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) > 10 and {m.momentum for m in norms} == {momentum}
    stem_bn = model.backbone.conv_input[1]
    seen = []
    hook = stem_bn.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    batch = batches(data, 1)[0]
    model.train()(batch.feats, batch.coords, batch.batch_size)
    hook.remove()
    torch.testing.assert_close(stem_bn.running_mean, momentum * seen[0].mean(0))


def test_batch_norm_momentum_out_of_range_is_a_config_error(tmp_path):
    cfg = tiny_config(tiny_dataset(tmp_path / "data"), tmp_path / "run", "model.bn_momentum=0")
    with pytest.raises(ConfigError, match="model.bn_momentum"):
        validate_finetune(cfg)
