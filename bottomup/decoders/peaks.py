"""Heatmap peaks: non-maximum suppression, top-k candidates, sub-pixel refinement, map sampling.

Everything works on a whole batch ``[B, K, H, W]`` at once on any device, with no loop over pixels. Peak finding
touches the full maps once, with a threshold; all later steps (the NMS window test, top-k, refinement) gather values
for the short list of pixels above it. That keeps decoding at a fraction of a millisecond on CPU, where each
full-map torch operation costs tens to hundreds of microseconds. Maps with many pixels above the threshold fall back
to a dense separable max filter.

Heatmaps are read through a :class:`HeatmapReader`, so that HigherHRNet's average of two resolutions
(:class:`AggregatedMaps`) is evaluated only where needed instead of being upsampled in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bottomup.decoders.checks import finite

REFINE_MODES = ("gaussian", "quarter", "none")

# Above this fraction of pixels over the threshold, candidates are first reduced to local maxima with a dense max
# filter; below it, testing each candidate's window directly is cheaper.
_DENSE_FRACTION = 1.0 / 16


@dataclass
class Peaks:
    """Top-k local maxima per channel of a batch of heatmaps.

    Attributes (``N`` = candidates kept per channel, at most ``max_peaks``; slots beyond a channel's peaks are
    padding with ``valid`` False and score 0):
        x, y: ``[B, K, N]`` refined sub-pixel coordinates in the heatmap grid.
        index: ``[B, K, N]`` flat pixel index ``row * W + col`` of each peak pixel.
        score: ``[B, K, N]`` heatmap value at the peak pixel, best first.
        valid: ``[B, K, N]`` slot holds a peak.
    """

    x: Tensor
    y: Tensor
    index: Tensor
    score: Tensor
    valid: Tensor


def flat_above(maps: Tensor, threshold: float) -> Tensor:
    """Flat indices (into ``maps.reshape(-1)``) of the values above ``threshold``; NaN never qualifies.

    On CPU this goes through a zero-copy numpy view: numpy's vectorised comparison and ``flatnonzero`` are about 8x
    faster there than torch's boolean kernels, and this is the one pass every decode makes over the full maps.
    """
    flat = maps.reshape(-1)
    if flat.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(flat.numpy() > threshold))
    return (flat > threshold).nonzero().squeeze(1)


class HeatmapReader:
    """Read access to a batch of heatmaps ``[B, K, H, W]`` by flat index ``((b * K + k) * H + row) * W + col``."""

    shape: tuple[int, int, int, int]
    device: torch.device

    def candidates(self, threshold: float) -> Tensor:
        """Flat indices of a superset of the pixels whose value exceeds ``threshold``."""
        raise NotImplementedError

    def values(self, index: Tensor) -> Tensor:
        """Values at flat indices (any shape)."""
        raise NotImplementedError

    def materialise(self) -> Tensor:
        """The full ``[B, K, H, W]`` maps."""
        raise NotImplementedError


class DenseMaps(HeatmapReader):
    """Heatmaps held as one tensor."""

    def __init__(self, maps: Tensor) -> None:
        self.maps = maps
        self.shape = tuple(maps.shape)  # type: ignore[assignment]
        self.device = maps.device

    def candidates(self, threshold: float) -> Tensor:
        return flat_above(self.maps, threshold).to(self.device)

    def values(self, index: Tensor) -> Tensor:
        return self.maps.reshape(-1).take(index)

    def materialise(self) -> Tensor:
        return self.maps


class AggregatedMaps(HeatmapReader):
    """The mean of high-resolution maps ``[B, K, H, W]`` and low-resolution maps ``[B, K, H/2, W/2]`` upsampled 2x
    bilinearly (``align_corners=False``), evaluated lazily: exactly what HigherHRNet's aggregation gives, without
    upsampling whole maps."""

    def __init__(self, high: Tensor, low: Tensor) -> None:
        b, k, h, w = high.shape
        if tuple(low.shape) != (b, k, h // 2, w // 2) or h % 2 or w % 2:
            raise ValueError(f"AggregatedMaps needs low maps of half the size of the high maps, got high "
                             f"{tuple(high.shape)} and low {tuple(low.shape)}")
        self.high, self.low = high, low
        self._high_flat, self._low_flat = high.reshape(-1), low.reshape(-1)
        self.shape = (b, k, h, w)
        self.device = high.device

    def candidates(self, threshold: float) -> Tensor:
        # The mean exceeds t only where the high map or the upsampled low map does, and the upsampled low map can
        # only exceed t within the 4x4 high-resolution footprint of a low pixel that does.
        b, k, h, w = self.shape
        lh, lw = h // 2, w // 2
        high_idx = flat_above(self.high, threshold).to(self.device)
        low_idx = flat_above(self.low, threshold).to(self.device)
        plane, low_pix = torch.div(low_idx, lh * lw, rounding_mode="floor"), low_idx % (lh * lw)
        row = 2 * torch.div(low_pix, lw, rounding_mode="floor")[:, None] + torch.arange(-1, 3, device=self.device)
        col = 2 * (low_pix % lw)[:, None] + torch.arange(-1, 3, device=self.device)
        row, col = row[:, :, None].clamp(0, h - 1), col[:, None, :].clamp(0, w - 1)
        # Deduplicate by marking a byte mask: cheaper than sorting the (16x overlapping) footprints.
        marks = torch.zeros(b * k * h * w, dtype=torch.uint8, device=self.device)
        marks[high_idx] = 1
        marks[((plane[:, None, None] * h + row) * w + col).reshape(-1)] = 1
        return flat_above(marks, 0).to(self.device)

    def values(self, index: Tensor) -> Tensor:
        _, _, h, w = self.shape
        lh, lw = h // 2, w // 2
        plane = torch.div(index, h * w, rounding_mode="floor")
        pix = index - plane * (h * w)
        row = torch.div(pix, w, rounding_mode="floor")
        col = pix - row * w
        # 2x upsampling with align_corners=False: output i reads inputs (i - 1) // 2 and the next one, with weight
        # 0.25 / 0.75 on the second for odd / even i; clamping at the borders matches torch's interpolate.
        y0, x0 = torch.div(row - 1, 2, rounding_mode="floor"), torch.div(col - 1, 2, rounding_mode="floor")
        fy, fx = 0.25 + 0.5 * (row % 2 == 0), 0.25 + 0.5 * (col % 2 == 0)
        r0, r1 = y0.clamp(0, lh - 1) * lw, (y0 + 1).clamp(0, lh - 1) * lw
        c0, c1 = x0.clamp(0, lw - 1), (x0 + 1).clamp(0, lw - 1)
        base = plane * (lh * lw)
        low = self._low_flat
        top = low.take(base + r0 + c0) * (1 - fx) + low.take(base + r0 + c1) * fx
        bottom = low.take(base + r1 + c0) * (1 - fx) + low.take(base + r1 + c1) * fx
        return 0.5 * (top * (1 - fy) + bottom * fy + self._high_flat.take(index))

    def materialise(self) -> Tensor:
        up = F.interpolate(self.low, size=self.shape[-2:], mode="bilinear", align_corners=False)
        return 0.5 * (up + self.high)


def find_peaks(heatmaps: Tensor | HeatmapReader, kernel: int = 3, threshold: float = 0.1, max_peaks: int = 30,
               refine: str = "gaussian") -> Peaks:
    """Local maxima above ``threshold``, the ``max_peaks`` strongest per channel, with sub-pixel positions.

    A pixel is a peak when no pixel of its ``kernel`` x ``kernel`` window is higher; among equal pixels of a window
    (a keypoint exactly between two pixels, float16 maps) only the one latest in row-major order counts, so a
    plateau yields one peak. NaN pixels are never peaks.

    Args:
        heatmaps: ``[B, K, H, W]`` float tensor, or a :class:`HeatmapReader`.
        kernel: NMS window size (odd).
        threshold: a peak's value must exceed this.
        max_peaks: candidates kept per channel (top-k).
        refine: sub-pixel refinement: ``gaussian`` fits a parabola to the log of the peak and its 4-neighbours
            along each axis, exact for an isotropic Gaussian peak (so maps rendered at sub-pixel centres decode to
            sub-pixel keypoints; the idea of DARK's Taylor expansion); ``quarter`` moves a quarter pixel towards the
            higher neighbour (the classic Hourglass/AE rule); ``none`` keeps integer pixel centres.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"NMS kernel must be a positive odd integer, got {kernel}")
    if refine not in REFINE_MODES:
        raise ValueError(f"unknown refine mode {refine!r}; choose one of {REFINE_MODES}")
    reader = heatmaps if isinstance(heatmaps, HeatmapReader) else DenseMaps(heatmaps)
    b, k, h, w = reader.shape
    index = reader.candidates(threshold)
    if index.numel() > _DENSE_FRACTION * b * k * h * w:
        maps = reader.materialise()
        index = flat_above(torch.where(maps == max_filter(maps, kernel), maps, torch.zeros_like(maps)), threshold)
        reader = DenseMaps(maps)
        index = index.to(reader.device)
    value = reader.values(index)
    above = value > threshold
    index, value = index[above], value[above]
    is_peak = _window_test(reader, index, value, kernel)
    index, value = index[is_peak], value[is_peak]
    plane, pixel = torch.div(index, h * w, rounding_mode="floor"), index % (h * w)
    slot_pixel, score, valid = _top_k_per_channel(plane, pixel, value, b * k, max(1, max_peaks))
    n = slot_pixel.shape[-1]
    plane_base = (torch.arange(b * k, device=slot_pixel.device) * (h * w))[:, None]
    dx, dy = _refine(reader, plane_base + slot_pixel, refine)
    x = (slot_pixel % w).float() + dx
    y = torch.div(slot_pixel, w, rounding_mode="floor").float() + dy
    return Peaks(x=x.view(b, k, n), y=y.view(b, k, n), index=slot_pixel.view(b, k, n),
                 score=finite(score).view(b, k, n), valid=valid.view(b, k, n))


def _window_test(reader: HeatmapReader, index: Tensor, value: Tensor, kernel: int) -> Tensor:
    """For candidates at flat ``index`` with ``value``: no neighbour higher, no equal neighbour later.

    The 4-neighbours are tested first: on smooth maps that alone rejects nearly every non-peak, so the full window
    is gathered only for the few survivors.
    """
    device = index.device
    if kernel == 1:
        return torch.ones(index.shape, dtype=torch.bool, device=device)
    cross = torch.tensor([[0, -1], [0, 1], [-1, 0], [1, 0]], device=device)
    keep = _not_beaten(reader, index, value, cross)
    if kernel > 3 or keep.any():
        r = kernel // 2
        span = torch.arange(-r, r + 1, device=device)
        window = torch.stack(torch.meshgrid(span, span, indexing="ij"), dim=-1).view(-1, 2)
        window = window[(window != 0).any(dim=1)]
        survivors = keep.nonzero(as_tuple=True)[0]
        keep[survivors] = _not_beaten(reader, index[survivors], value[survivors], window)
    return keep


def _not_beaten(reader: HeatmapReader, index: Tensor, value: Tensor, offsets: Tensor) -> Tensor:
    """No neighbour at ``offsets [M, 2]`` (dy, dx) is higher, equal and later in row-major order, or NaN."""
    _, _, h, w = reader.shape
    dy, dx = offsets[:, 0], offsets[:, 1]
    plane, pixel = torch.div(index, h * w, rounding_mode="floor"), index % (h * w)
    row, col = torch.div(pixel, w, rounding_mode="floor"), pixel % w
    nr, nc = row[:, None] + dy, col[:, None] + dx
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    neighbour = reader.values((plane[:, None] * h + nr.clamp(0, h - 1)) * w + nc.clamp(0, w - 1))
    later = (dy * w + dx) > 0
    beaten = (neighbour > value[:, None]) | ((neighbour == value[:, None]) & later) | neighbour.isnan()
    return ~(beaten & inside).any(dim=1)


def _top_k_per_channel(channel: Tensor, pixel: Tensor, value: Tensor, channels: int,
                       max_peaks: int) -> tuple[Tensor, Tensor, Tensor]:
    """Scatter a flat list of peaks into ``[channels, N]`` slots, best first per channel, ``N <= max_peaks``."""
    device = value.device
    order = torch.argsort(value, descending=True, stable=True)
    channel, pixel, value = channel[order], pixel[order], value[order]
    order = torch.argsort(channel, stable=True)
    channel, pixel, value = channel[order], pixel[order], value[order]
    counts = torch.bincount(channel, minlength=channels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(channel.numel(), device=device) - starts[channel]
    n = max(1, min(max_peaks, int(counts.max()) if channel.numel() else 1))
    keep = rank < n
    slots = torch.zeros(channels, n, dtype=torch.long, device=device)
    score = torch.zeros(channels, n, device=device)
    valid = torch.zeros(channels, n, dtype=torch.bool, device=device)
    slots[channel[keep], rank[keep]] = pixel[keep]
    score[channel[keep], rank[keep]] = value[keep]
    valid[channel[keep], rank[keep]] = True
    return slots, score, valid


def _refine(reader: HeatmapReader, index: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Sub-pixel offsets ``(dx, dy)`` in ``[-0.5, 0.5]`` for peaks at flat ``index`` (see :func:`find_peaks`)."""
    if mode == "none":
        zero = torch.zeros(index.shape, device=index.device)
        return zero, zero
    _, _, h, w = reader.shape
    plane, pixel = torch.div(index, h * w, rounding_mode="floor"), index % (h * w)
    row, col = torch.div(pixel, w, rounding_mode="floor"), pixel % w
    # Centre, left, right, up, down in one read.
    rows = torch.stack([row, row, row, row - 1, row + 1]).clamp(0, h - 1)
    cols = torch.stack([col, col - 1, col + 1, col, col]).clamp(0, w - 1)
    mid, left, right, up, down = reader.values((plane * h + rows) * w + cols).unbind(0)
    if mode == "quarter":
        dx, dy = 0.25 * torch.sign(right - left), 0.25 * torch.sign(down - up)
    else:
        dx, dy = _log_parabola(left, mid, right), _log_parabola(up, mid, down)
    # A peak on the border has only one neighbour along that axis: its side of the peak is unknown, so stay put.
    dx = torch.where((col > 0) & (col < w - 1), dx, torch.zeros_like(dx))
    dy = torch.where((row > 0) & (row < h - 1), dy, torch.zeros_like(dy))
    return finite(dx), finite(dy)


def _log_parabola(before: Tensor, mid: Tensor, after: Tensor) -> Tensor:
    eps = 1e-10
    lb, lm, la = before.clamp_min(eps).log(), mid.clamp_min(eps).log(), after.clamp_min(eps).log()
    curvature = la - 2.0 * lm + lb
    slope = 0.5 * (la - lb)
    offset = torch.where(curvature < -1e-12, -slope / curvature.clamp_max(-1e-12), torch.zeros_like(slope))
    return finite(offset).clamp(-0.5, 0.5)


def max_filter(maps: Tensor, kernel: int) -> Tensor:
    """Maximum over each ``kernel`` x ``kernel`` window (stride 1, borders padded with -inf), ``[..., H, W]``.

    Same result as ``F.max_pool2d(maps, kernel, 1, kernel // 2)`` but separable, as a few element-wise maxima of
    shifted views: on CPU torch's stride-1 max-pooling is many times slower than this.
    """
    r = kernel // 2
    h, w = maps.shape[-2:]
    padded = F.pad(maps, (r, r, r, r), value=float("-inf"))
    rows = padded[..., :, 0:w]
    for i in range(1, kernel):
        rows = torch.maximum(rows, padded[..., :, i:i + w])
    out = rows[..., 0:h, :]
    for i in range(1, kernel):
        out = torch.maximum(out, rows[..., i:i + h, :])
    return out


def sample(maps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear reading of every channel of ``maps`` ``[B, C, H, W]`` at points ``x, y`` ``[B, N]`` -> ``[B, C, N]``.

    Coordinates are in the map's pixel grid (centres at integers); points outside are clamped to the border.
    Non-finite map values read as 0 or +-:data:`~bottomup.decoders.checks.MAP_LIMIT`.
    """
    b, c, h, w = maps.shape
    grid = torch.stack([_normalise(x, w), _normalise(y, h)], dim=-1).view(b, 1, -1, 2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return finite(out.view(b, c, -1))


def sample_per_channel(maps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear reading of channel ``c`` of ``maps`` ``[B, C, H, W]`` at its own points ``x, y`` ``[B, C, N]``."""
    b, c, h, w = maps.shape
    return sample(maps.reshape(b * c, 1, h, w), x.reshape(b * c, -1), y.reshape(b * c, -1)).view(b, c, -1)


def _normalise(coord: Tensor, size: int) -> Tensor:
    return finite(coord.float()) * (2.0 / max(size - 1, 1)) - 1.0
