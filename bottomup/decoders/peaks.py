"""Heatmap peaks: non-maximum suppression by max-pooling, top-k candidates, sub-pixel refinement, map sampling.

All functions work on a whole batch ``[B, K, H, W]`` at once on any device; there is no loop over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

REFINE_MODES = ("gaussian", "quarter", "none")


@dataclass
class Peaks:
    """Top-k local maxima per channel of a batch of heatmaps.

    Attributes (``N`` = number of candidates kept per channel):
        x, y: ``[B, K, N]`` refined sub-pixel coordinates in the heatmap grid.
        index: ``[B, K, N]`` flat pixel index ``row * W + col`` of each peak pixel.
        score: ``[B, K, N]`` heatmap value at the peak pixel.
        valid: ``[B, K, N]`` peak is a local maximum above the threshold (invalid slots are padding).
    """

    x: Tensor
    y: Tensor
    index: Tensor
    score: Tensor
    valid: Tensor


def local_maxima(heatmaps: Tensor, kernel: int = 3) -> Tensor:
    """Boolean ``[B, K, H, W]`` mask of pixels that are the maximum of their ``kernel`` x ``kernel`` window.

    A plateau of equal values (a keypoint exactly between two pixels, or a float16 map) yields one peak, not one per
    tied pixel: among tied maxima in a window only the pixel with the highest flat index is kept.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"NMS kernel must be a positive odd integer, got {kernel}")
    b, k, h, w = heatmaps.shape
    pad = kernel // 2
    is_max = heatmaps == F.max_pool2d(heatmaps, kernel, stride=1, padding=pad)
    flat = torch.arange(h * w, device=heatmaps.device, dtype=torch.float32).view(1, 1, h, w)
    tagged = torch.where(is_max, flat, torch.full_like(flat, -1.0))
    return is_max & (F.max_pool2d(tagged, kernel, stride=1, padding=pad) == flat)


def find_peaks(heatmaps: Tensor, kernel: int = 3, threshold: float = 0.1, max_peaks: int = 30,
               refine: str = "gaussian") -> Peaks:
    """Local maxima above ``threshold``, the ``max_peaks`` strongest per channel, with sub-pixel positions.

    Args:
        heatmaps: ``[B, K, H, W]`` float tensor (already sanitised).
        kernel: NMS window size (odd).
        threshold: minimum heatmap value of a peak.
        max_peaks: candidates kept per channel (top-k).
        refine: sub-pixel refinement, see :func:`refine_offsets`.
    """
    b, k, h, w = heatmaps.shape
    n = max(1, min(max_peaks, h * w))
    keep = local_maxima(heatmaps, kernel)
    masked = torch.where(keep, heatmaps, torch.full_like(heatmaps, float("-inf")))
    score, index = masked.flatten(2).topk(n, dim=2)
    valid = score > threshold
    score = torch.where(valid, score, torch.zeros_like(score))
    dx, dy = refine_offsets(heatmaps, index, refine)
    x = (index % w).float() + dx
    y = torch.div(index, w, rounding_mode="floor").float() + dy
    return Peaks(x=x, y=y, index=index, score=score, valid=valid)


def refine_offsets(heatmaps: Tensor, index: Tensor, mode: str = "gaussian") -> tuple[Tensor, Tensor]:
    """Sub-pixel offsets ``(dx, dy)``, each ``[B, K, N]`` in ``[-0.5, 0.5]``, for peaks at flat ``index``.

    Modes:
        ``gaussian``: fit a parabola to the log of the peak and its 4-neighbours along each axis. Exact for an
            isotropic Gaussian peak, so maps rendered at sub-pixel centres decode to sub-pixel keypoints (the same idea
            as DARK's Taylor expansion of the log-heatmap).
        ``quarter``: move a quarter pixel towards the higher neighbour (the classic Hourglass/AE rule); ties stay.
        ``none``: integer pixel centres.
    """
    if mode not in REFINE_MODES:
        raise ValueError(f"unknown refine mode {mode!r}; choose one of {REFINE_MODES}")
    if mode == "none":
        zero = torch.zeros(index.shape, device=index.device)
        return zero, zero
    b, k, h, w = heatmaps.shape
    padded = F.pad(heatmaps, (1, 1, 1, 1), mode="replicate").flatten(2)
    row = torch.div(index, w, rounding_mode="floor")
    col = index % w
    centre = (row + 1) * (w + 2) + (col + 1)

    def at(offset: int) -> Tensor:
        return padded.gather(2, centre + offset)

    left, right, up, down, mid = at(-1), at(1), at(-(w + 2)), at(w + 2), at(0)
    if mode == "quarter":
        return 0.25 * torch.sign(right - left), 0.25 * torch.sign(down - up)
    return _log_parabola(left, mid, right), _log_parabola(up, mid, down)


def _log_parabola(before: Tensor, mid: Tensor, after: Tensor) -> Tensor:
    eps = 1e-10
    lb, lm, la = before.clamp_min(eps).log(), mid.clamp_min(eps).log(), after.clamp_min(eps).log()
    curvature = la - 2.0 * lm + lb
    slope = 0.5 * (la - lb)
    offset = torch.where(curvature < -1e-12, -slope / curvature.clamp_max(-1e-12), torch.zeros_like(slope))
    return offset.clamp(-0.5, 0.5)


def sample(maps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear reading of every channel of ``maps`` ``[B, C, H, W]`` at points ``x, y`` ``[B, N]`` -> ``[B, C, N]``.

    Coordinates are in the map's pixel grid (centres at integers); points outside are clamped to the border.
    """
    b, c, h, w = maps.shape
    grid = torch.stack([_normalise(x, w), _normalise(y, h)], dim=-1).view(b, 1, -1, 2)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True).view(b, c, -1)


def sample_per_channel(maps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear reading of channel ``c`` of ``maps`` ``[B, C, H, W]`` at its own points ``x, y`` ``[B, C, N]``."""
    b, c, h, w = maps.shape
    grid = torch.stack([_normalise(x, w), _normalise(y, h)], dim=-1).view(b * c, 1, -1, 2)
    out = F.grid_sample(maps.reshape(b * c, 1, h, w), grid, mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.view(b, c, -1)


def _normalise(coord: Tensor, size: int) -> Tensor:
    return coord.float() * (2.0 / max(size - 1, 1)) - 1.0
