"""The decoders' output: the poses found in one image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Poses:
    """The people found in one image.

    Attributes:
        keypoints: ``[P, K, 3]`` float tensor of (x, y, score) per keypoint. Coordinates are in the pixel grid the
            producer states (decoders: their first input's grid, pixel centres at integers). A keypoint the decoder
            could not place has score 0.
        scores: ``[P]`` person scores (what COCO evaluation ranks by), sorted high to low by the decoders.
    """

    keypoints: Tensor
    scores: Tensor

    def __post_init__(self) -> None:
        if self.keypoints.dim() != 3 or self.keypoints.shape[-1] != 3:
            raise ValueError(f"Poses.keypoints must be [P, K, 3], got {tuple(self.keypoints.shape)}")
        if self.scores.shape != self.keypoints.shape[:1]:
            raise ValueError(f"Poses.scores must be [P] with P={self.keypoints.shape[0]}, "
                             f"got {tuple(self.scores.shape)}")

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> "Poses":
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Poses(self.keypoints[index], self.scores[index])

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    @property
    def device(self) -> torch.device:
        return self.keypoints.device

    def to(self, device: torch.device | str) -> "Poses":
        return Poses(self.keypoints.to(device), self.scores.to(device))

    def transformed(self, scale: float | tuple[float, float], offset: float | tuple[float, float] = 0.0) -> "Poses":
        """Poses with coordinates mapped by ``x' = x * scale + offset`` (per axis if tuples); scores unchanged."""
        sx, sy = (scale, scale) if isinstance(scale, (int, float)) else scale
        ox, oy = (offset, offset) if isinstance(offset, (int, float)) else offset
        kpts = self.keypoints.clone()
        kpts[..., 0] = kpts[..., 0] * sx + ox
        kpts[..., 1] = kpts[..., 1] * sy + oy
        return Poses(kpts, self.scores.clone())

    def affine(self, matrix: Tensor) -> "Poses":
        """Poses with coordinates mapped by the ``[2, 3]`` affine ``matrix``; scores unchanged."""
        m = torch.as_tensor(matrix, dtype=self.keypoints.dtype, device=self.device)
        if m.shape != (2, 3):
            raise ValueError(f"affine matrix must be [2, 3], got {tuple(m.shape)}")
        kpts = self.keypoints.clone()
        kpts[..., :2] = self.keypoints[..., :2] @ m[:, :2].T + m[:, 2]
        return Poses(kpts, self.scores.clone())
