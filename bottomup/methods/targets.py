"""Target rendering shared by the method codecs: keypoints to map coordinates, Gaussians, ignore masks.

Everything is vectorised torch on small per-keypoint patches (scatter with ``amax``), so encoding an image costs
little more than the number of labelled keypoints, whatever the map size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bottomup import geometry


def as_keypoints(keypoints: Tensor | np.ndarray, num_keypoints: int) -> Tensor:
    """``[N, K, 3]`` float32 tensor (x, y, v) from any array-like; checks the shape against the skeleton."""
    kpts = torch.as_tensor(np.asarray(keypoints, dtype=np.float32) if not isinstance(keypoints, Tensor) else keypoints,
                           dtype=torch.float32)
    if kpts.numel() == 0:
        return torch.zeros(0, num_keypoints, 3)
    if kpts.dim() != 3 or kpts.shape[1:] != (num_keypoints, 3):
        raise ValueError(f"keypoints must be [N, {num_keypoints}, 3] (x, y, visibility), got {tuple(kpts.shape)}")
    return kpts


def to_map(keypoints: Tensor, stride: float) -> Tensor:
    """Keypoints from input pixels to the grid of a map at ``stride`` (visibility column kept)."""
    out = keypoints.clone()
    out[..., :2] = (keypoints[..., :2] + 0.5) / stride - 0.5
    return out


def map_size(input_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``(width, height)`` of the map at ``stride`` for an input of ``(width, height)`` (rounded up)."""
    return math.ceil(input_size[0] / stride), math.ceil(input_size[1] / stride)


def inside(keypoints: Tensor, width: int, height: int) -> Tensor:
    """``[N, K]`` mask: labelled (v > 0) and inside the map area ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``."""
    x, y, v = keypoints.unbind(-1)
    return (v > 0) & (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)


def gaussian_patches(points: Tensor, width: int, height: int, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
    """Gaussian values on a ``(2r+1)^2`` patch around each point, ``r = ceil(3 sigma)``.

    Args:
        points: ``[M, 2]`` sub-pixel centres in map coordinates.
    Returns:
        ``(flat_index, value, in_bounds)``, each ``[M, (2r+1)^2]``; ``flat_index`` is ``row * W + col``.
    """
    r = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-r, r + 1, dtype=torch.float32)
    cx = points[:, 0].round()
    cy = points[:, 1].round()
    xs = cx[:, None] + offsets[None, :]
    ys = cy[:, None] + offsets[None, :]
    gx = torch.exp(-((xs - points[:, :1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((ys - points[:, 1:2]) ** 2) / (2 * sigma**2))
    value = (gy[:, :, None] * gx[:, None, :]).flatten(1)
    ix = xs[:, None, :].expand(-1, len(offsets), -1).flatten(1)
    iy = ys[:, :, None].expand(-1, -1, len(offsets)).flatten(1)
    in_bounds = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    flat = (iy.clamp(0, height - 1) * width + ix.clamp(0, width - 1)).long()
    return flat, value, in_bounds


def render_heatmaps(keypoints: Tensor, width: int, height: int, sigma: float,
                    tags: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Gaussian heatmaps at sub-pixel centres, combined across people by maximum (as the AE/HigherHRNet targets).

    Args:
        keypoints: ``[N, K, 3]`` in map coordinates; joints with ``v > 0`` inside the map are drawn.
        tags: optional ``[N]`` per-person values; if given, also return ``[K, H, W]`` tag maps holding, at every pixel
            a person's Gaussian dominates, that person's value (0 elsewhere) -- what a perfect AE tag head outputs.
    Returns:
        ``(heatmaps [K, H, W], tag_maps [K, H, W] or None)``.
    """
    n, k, _ = keypoints.shape
    heat = torch.zeros(k * height * width)
    tag_maps = torch.zeros(k * height * width) if tags is not None else None
    drawn = inside(keypoints, width, height)
    if not drawn.any():
        return heat.view(k, height, width), None if tag_maps is None else tag_maps.view(k, height, width)
    person, joint = drawn.nonzero(as_tuple=True)
    flat, value, ok = gaussian_patches(keypoints[person, joint, :2], width, height, sigma)
    flat = flat + (joint * height * width)[:, None]
    heat.scatter_reduce_(0, flat[ok], value[ok], reduce="amax")
    if tag_maps is not None:
        owner = ok & (value >= heat[flat]) & (value > 0)
        person_tag = tags[person][:, None].expand_as(value)
        tag_maps[flat[owner]] = person_tag[owner]
        tag_maps = tag_maps.view(k, height, width)
    return heat.view(k, height, width), tag_maps


def downsample_mask(mask: np.ndarray | Tensor | None, input_size: tuple[int, int], stride: int,
                    size: tuple[int, int] | None = None) -> Tensor:
    """``[H_in, W_in]`` 0/1 ignore mask (1 = use) -> ``[1, H, W]`` at ``stride`` by area averaging, 0.5 cut.

    ``size`` (``(W, H)``) overrides the map size (default :func:`map_size`); the mask is padded with 1 to cover it.
    """
    width, height = size if size is not None else map_size(input_size, stride)
    if mask is None:
        return torch.ones(1, height, width)
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    if m.shape != (input_size[1], input_size[0]):
        raise ValueError(f"mask must be [H, W] = [{input_size[1]}, {input_size[0]}], got {tuple(m.shape)}")
    pad_h, pad_w = height * stride - m.shape[0], width * stride - m.shape[1]
    m = F.pad(m[None, None], (0, pad_w, 0, pad_h), value=1.0)
    return (F.avg_pool2d(m, stride) >= 0.5).float()[0]


def map_to_input_matrix(stride: int) -> np.ndarray:
    """3x3 affine from the grid of a map at ``stride`` back to input pixels."""
    return geometry.invert(geometry.stride_down(stride))
