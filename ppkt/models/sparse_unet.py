"""SR-UNet: residual sparse 3D U-Net (MinkUNet-style) on spconv -- the PPKT student f3D.

Layout (that of Pointcept's ``SpUNet-v1m1`` without its classifier; parameter names and shapes are the
same, so a state dict loads in either direction -- Pointcept's ``final`` head keys are simply absent):

    conv_input   SubMConv3d k=5 -> BN -> ReLU                      channels[0] at stride 1
    down[s]      SparseConv3d k=2 stride 2 -> BN -> ReLU           s = 0..3, to channels[s]
    enc[s]       layers[s] residual BasicBlocks (SubM k=3)          channels[s] at stride 2^(s+1)
    up[s]        SparseInverseConv3d k=2 (inverts down[s]) -> BN -> ReLU
    dec[s]       concat skip, layers[7-s] BasicBlocks               channels[7-s] at stride 2^s
    (decoder runs s = 3..0; output = dec[0], channels[-1] per input voxel)

BatchNorm is ``BatchNorm1d(eps=1e-3, momentum=0.01)`` on the voxel features. Weights of spconv layers
are stored as (out, kx, ky, kz, in). Coordinates are integer voxel indices (voxel size is the caller's
choice; PPKT uses 2.5 cm); the receptive field is therefore in voxels.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor, nn

from ppkt.models.catalog import DEFAULT_CHANNELS, SR_UNET_LAYERS
from ppkt.models.spconv_cpu import default_conv_algo, spconv

__all__ = ["SparseResUNet", "BasicBlock", "set_bn_momentum", "build_sparse_unet", "SR_UNET_LAYERS", "DEFAULT_CHANNELS"]



def _bn(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


def set_bn_momentum(model: nn.Module, momentum: float) -> nn.Module:
    """Set the running-statistics momentum of every batch norm in `model` (in place; returns it). Fine-tuning uses
    0.1: at the pretraining's 0.01 the statistics follow the weights ~100 iterations late, and a short run ends
    with statistics that still hold 0.99^n of their start (pretrained, or (0, 1) from scratch)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    return model


class BasicBlock(spconv.SparseModule):
    """Residual block: x -> SubM3 -> BN -> ReLU -> SubM3 -> BN, + proj(x), -> ReLU.

    ``proj`` is the identity when ``in_channels == channels``, else SubM k=1 -> BN.
    """

    def __init__(self, in_channels: int, channels: int, indice_key: str):
        super().__init__()
        algo = default_conv_algo()
        if in_channels == channels:
            self.proj = spconv.SparseSequential(nn.Identity())
        else:
            self.proj = spconv.SparseSequential(
                spconv.SubMConv3d(in_channels, channels, kernel_size=1, bias=False, algo=algo), _bn(channels)
            )
        self.conv1 = spconv.SubMConv3d(
            in_channels, channels, kernel_size=3, padding=1, bias=False, indice_key=indice_key, algo=algo
        )
        self.bn1 = _bn(channels)
        self.conv2 = spconv.SubMConv3d(
            channels, channels, kernel_size=3, padding=1, bias=False, indice_key=indice_key, algo=algo
        )
        self.bn2 = _bn(channels)
        self.relu = nn.ReLU()

    def forward(self, x: "spconv.SparseConvTensor") -> "spconv.SparseConvTensor":
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        residual = self.proj(x).features
        return out.replace_feature(self.relu(self.bn2(out.features) + residual))


def _down(in_channels: int, out_channels: int, key: str) -> "spconv.SparseSequential":
    conv = spconv.SparseConv3d(
        in_channels, out_channels, kernel_size=2, stride=2, bias=False, indice_key=key, algo=default_conv_algo()
    )
    return spconv.SparseSequential(conv, _bn(out_channels), nn.ReLU())


def _up(in_channels: int, out_channels: int, key: str) -> "spconv.SparseSequential":
    conv = spconv.SparseInverseConv3d(
        in_channels, out_channels, kernel_size=2, bias=False, indice_key=key, algo=default_conv_algo()
    )
    return spconv.SparseSequential(conv, _bn(out_channels), nn.ReLU())


def _blocks(in_channels: int, channels: int, n: int, key: str) -> "spconv.SparseSequential":
    return spconv.SparseSequential(
        OrderedDict((f"block{i}", BasicBlock(in_channels if i == 0 else channels, channels, key)) for i in range(n))
    )


class SparseResUNet(nn.Module):
    """Residual sparse U-Net with 4 down / 4 up stages; per-voxel features out.

    Args:
        in_channels: input feature channels per voxel (e.g. 3 for RGB).
        layers: 8 ints, residual blocks per stage (4 encoder, then 4 decoder stages from coarse to fine).
        channels: 8 ints, widths of the same stages; the stem has ``channels[0]`` channels and the
            output ``channels[-1]``.
    """

    num_stages = 4

    def __init__(
        self, in_channels: int, layers: Sequence[int], channels: Sequence[int] = DEFAULT_CHANNELS
    ):
        super().__init__()
        layers, channels = tuple(int(v) for v in layers), tuple(int(v) for v in channels)
        if len(layers) != 2 * self.num_stages or len(channels) != 2 * self.num_stages:
            raise ValueError(f"layers and channels need {2 * self.num_stages} entries, got {layers}, {channels}")
        if in_channels < 1 or min(channels) < 1 or min(layers) < 1:
            raise ValueError(f"in_channels, channels and layers must be positive: {in_channels}, {channels}, {layers}")
        self.in_channels, self.layers, self.channels = int(in_channels), layers, channels
        self.out_channels = channels[-1]
        stem = channels[0]  # Pointcept's base_channels (32 = channels[0] in its default)

        self.conv_input = spconv.SparseSequential(
            spconv.SubMConv3d(
                in_channels, stem, kernel_size=5, padding=1, bias=False, indice_key="stem", algo=default_conv_algo()
            ),
            _bn(stem),
            nn.ReLU(),
        )
        self.down, self.up, self.enc, self.dec = (nn.ModuleList() for _ in range(4))
        n = len(channels)
        for s in range(self.num_stages):
            skip_ch = stem if s == 0 else channels[s - 1]  # width of the encoder output at stride 2^s
            coarse_ch = channels[n - s - 2]  # width arriving from the stage below (stride 2^(s+1))
            dec_ch = channels[n - s - 1]
            self.down.append(_down(skip_ch, channels[s], key=f"spconv{s + 1}"))
            self.enc.append(_blocks(channels[s], channels[s], layers[s], key=f"subm{s + 1}"))
            self.up.append(_up(coarse_ch, dec_ch, key=f"spconv{s + 1}"))
            self.dec.append(_blocks(dec_ch + skip_ch, dec_ch, layers[n - s - 1], key=f"subm{s}"))
        self.apply(self._init_weights)

    def receptive_radius(self) -> int:
        """Voxels from an output voxel to the farthest input voxel that can change it: the stem's 5^3 kernel (2),
        each down conv (one cell of its input stride), each residual block (two 3^3 SubM convs: 2 cells of its stride)
        and each up conv (one cell of its output stride)."""
        r, n = 2, self.num_stages
        for s in range(n):
            r += 2**s + self.layers[s] * 2 * 2 ** (s + 1)  # down to stride 2^(s+1), then the encoder blocks
            r += 2**s + self.layers[2 * n - 1 - s] * 2 * 2**s  # up to stride 2^s, then the decoder blocks
        return r

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Pointcept's scheme: SubM convs ~ truncated N(0, 0.02); BN = (1, 0); other convs spconv's default."""
        if isinstance(m, spconv.SubMConv3d):
            nn.init.trunc_normal_(m.weight, std=0.02)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ input
    def _sparse_input(self, feats: Tensor, coords: Tensor, batch_size: int) -> "spconv.SparseConvTensor":
        """Validate inputs and wrap them in a SparseConvTensor (spatial shape a multiple of 2^stages)."""
        if not isinstance(feats, Tensor) or feats.dim() != 2 or feats.shape[1] != self.in_channels:
            raise ValueError(f"feats must be a (N, {self.in_channels}) tensor, got {_shape(feats)}")
        if not feats.is_floating_point():
            raise ValueError(f"feats must be floating point, got {feats.dtype}")
        if not isinstance(coords, Tensor) or coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be a (N, 4) integer tensor [batch, x, y, z], got {_shape(coords)}")
        if coords.is_floating_point() or coords.is_complex() or coords.dtype == torch.bool:
            raise ValueError(f"coords must be integer voxel indices, got {coords.dtype}")
        if coords.shape[0] != feats.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        if coords.shape[0] == 0:
            raise ValueError("empty input: need at least one voxel")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        c = coords.long()
        if int(c.min()) < 0:
            raise ValueError("coords must be non-negative (shift each cloud so its minimum voxel index is 0)")
        if int(c[:, 0].max()) >= batch_size:
            raise ValueError(f"batch index {int(c[:, 0].max())} out of range for batch_size={batch_size}")
        step = 2**self.num_stages
        extent = c[:, 1:].max(dim=0).values + 1
        shape = (((extent + step - 1) // step) * step).tolist()  # every stride-2 level then divides evenly
        if int(batch_size) * shape[0] * shape[1] * shape[2] >= 2**62:
            raise ValueError(f"grid of {batch_size} x {shape} voxels is too large; check the voxel indices")
        key = ((c[:, 0] * shape[0] + c[:, 1]) * shape[1] + c[:, 2]) * shape[2] + c[:, 3]
        if torch.unique(key).numel() != key.numel():
            raise ValueError("duplicate voxel coordinates within a batch item; voxelise (deduplicate) first")
        return spconv.SparseConvTensor(feats, coords.int().contiguous(), shape, int(batch_size))

    # ---------------------------------------------------------------- forward
    def encode(self, feats: Tensor, coords: Tensor, batch_size: int) -> "spconv.SparseConvTensor":
        """Encoder only: the bottleneck SparseConvTensor, ``channels[3]`` features at stride 16 voxels."""
        x = self.conv_input(self._sparse_input(feats, coords, batch_size))
        for s in range(self.num_stages):
            x = self.enc[s](self.down[s](x))
        return x

    def forward(self, feats: Tensor, coords: Tensor, batch_size: int) -> Tensor:
        """Per-voxel features.

        Args:
            feats: (N, in_channels) float voxel features.
            coords: (N, 4) int [batch, x, y, z], non-negative voxel indices, unique within each batch item.
            batch_size: number of clouds B (batch indices in [0, B)).
        Returns:
            (N, out_channels); row i belongs to input voxel i.
        """
        x = self.conv_input(self._sparse_input(feats, coords, batch_size))
        skips = [x]
        for s in range(self.num_stages):
            x = self.enc[s](self.down[s](x))
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for s in reversed(range(self.num_stages)):
            x = self.up[s](x)
            x = x.replace_feature(torch.cat((x.features, skips.pop().features), dim=1))
            x = self.dec[s](x)
        # SubM and inverse convs keep the input voxel order (checked in the tests)
        return x.features


def _shape(t) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__


def build_sparse_unet(name: str, in_channels: int, channels: Sequence[int] | None = None) -> SparseResUNet:
    """SR-UNet14 / SR-UNet18 / SR-UNet34 (layers per stage as in MinkUNet); ``channels`` defaults to
    (32, 64, 128, 256, 256, 128, 96, 96)."""
    if name not in SR_UNET_LAYERS:
        raise ValueError(f"unknown sparse U-Net {name!r}; valid: {', '.join(SR_UNET_LAYERS)}")
    return SparseResUNet(in_channels, SR_UNET_LAYERS[name], DEFAULT_CHANNELS if channels is None else channels)
