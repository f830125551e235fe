"""Projection heads g2D and g3D mapping teacher and student features into one embedding space."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class UPL(nn.Module):
    """g2D: 1x1 conv (C -> E), bilinear upsampling to the input image size, L2 normalisation.

    With upsample=False it is the PL ablation: each pixel takes the feature of the cell it falls in.
    """

    def __init__(self, in_channels: int, embed_dim: int = 128, upsample: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        self.upsample = upsample

    def forward(self, features: Tensor, image_size: tuple[int, int]) -> Tensor:
        """features (B, C, h, w) -> embeddings (B, E, H, W) at the image size (H, W) pixels, unit norm."""
        z = self.conv(features)
        mode = dict(mode="bilinear", align_corners=False) if self.upsample else dict(mode="nearest-exact")
        return F.normalize(F.interpolate(z, size=tuple(image_size), **mode), dim=1)

    def at_pixels(self, features: Tensor, image_size: tuple[int, int], batch: Tensor, pixel: Tensor) -> Tensor:
        """Embeddings (n, E) of pixels `pixel` (n,) (flat v * W + u) of images `batch` (n,).

        Equal to forward(...)[batch, :, v, u] without building the full-resolution map. The pixel coordinates and
        interpolation weights are computed in float64 and the cells are combined, projected and normalised in float32
        (float64 for float64 features), also for float16/bfloat16 features and under autocast: in float16 a pixel
        index above 2048 is rounded to an even one, the source coordinate is rounded to 11 significant bits, and
        (u + 0.5) * w overflows past 65504. Returns float32 (float64 for float64 features); the cells are read from
        `features` as they are.
        """
        h_img, w_img = image_size
        h, w = features.shape[-2:]
        dtype = torch.promote_types(features.dtype, torch.float32)
        v = torch.div(pixel, w_img, rounding_mode="floor")
        u = pixel - v * w_img
        if self.upsample:  # the source coordinate of bilinear resizing with align_corners=False
            x = ((u.double() + 0.5) * (w / w_img) - 0.5).clamp_min(0)
            y = ((v.double() + 0.5) * (h / h_img) - 0.5).clamp_min(0)
            x0, y0 = x.floor().long().clamp(max=w - 1), y.floor().long().clamp(max=h - 1)
            x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
            ax, ay = (x - x0).unsqueeze(1).to(dtype), (y - y0).unsqueeze(1).to(dtype)
            cell = lambda yy, xx: features[batch, :, yy, xx].to(dtype)  # noqa: E731
            f = (1 - ay) * ((1 - ax) * cell(y0, x0) + ax * cell(y0, x1)) + ay * ((1 - ax) * cell(y1, x0) + ax * cell(y1, x1))
        else:  # nearest cell, as "nearest-exact" resizing: floor((u + 0.5) * scale), scale = w / W in float32 as torch has it
            x = ((u.float() + 0.5) * _scale(w, w_img)).floor().long().clamp(max=w - 1)
            y = ((v.float() + 0.5) * _scale(h, h_img)).floor().long().clamp(max=h - 1)
            f = features[batch, :, y, x].to(dtype)
        with torch.autocast(device_type=f.device.type, enabled=False):  # autocast would run the projection in float16
            z = F.linear(f, self.conv.weight.flatten(1).to(dtype), self.conv.bias.to(dtype))
            return F.normalize(z, dim=1)


def _scale(size_in: int, size_out: int) -> Tensor:
    """The float32 ratio size_in / size_out that torch's nearest(-exact) resizing uses (one float32 division)."""
    return torch.tensor(size_in, dtype=torch.float32) / torch.tensor(size_out, dtype=torch.float32)


class Projection3D(nn.Module):
    """g3D: a linear layer shared by all points (C -> E), then L2 normalisation."""

    def __init__(self, in_channels: int, embed_dim: int = 128):
        super().__init__()
        self.linear = nn.Linear(in_channels, embed_dim)

    def forward(self, features: Tensor) -> Tensor:
        """features (N, C) -> embeddings (N, E), unit norm."""
        return F.normalize(self.linear(features), dim=1)
