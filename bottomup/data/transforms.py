"""Image + keypoint + mask transforms into the network's square input, and ImageNet normalisation.

Two transforms share one warp (:func:`warp`):

* :class:`TrainTransform`, the HigherHRNet recipe: the image is centred in the square input at the scale that fits
  its longer side, then randomly rotated (uniform in +-``rotation`` degrees), scaled (uniform in ``scale``), shifted
  (uniform in +-``translate`` input pixels per axis) and, with probability ``flip``, mirrored (keypoint channels
  swapped with the skeleton's ``flip_index``).
* :class:`EvalTransform`: the image is fitted into the input keeping its aspect, centred on a square canvas
  (:func:`bottomup.geometry.fit_into`) -- exactly where :class:`TrainTransform` puts it when every augmentation is
  off -- so ``matrix`` maps predictions back with one inverse.

Both return the 3x3 image->input ``matrix`` (pixel centres at integer coordinates, see :mod:`bottomup.geometry`).

Border conventions. Image pixels outside the source are filled with the ImageNet mean colour, which normalises to 0,
the same value the evaluation canvas is padded with. The ignore mask (1 = use, 0 = ignore) is warped with nearest
neighbour and **border value 1**: the padding shows no person, so "no keypoint here" is a correct target there and
the network learns to stay silent on the padding it will also see at evaluation time. Ignoring the padding instead
(HigherHRNet's border 0) would leave the response on the evaluation canvas's padding unsupervised.

All randomness comes from a :class:`numpy.random.Generator` passed in; every draw is made whatever the values, so a
sample depends only on the generator's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from bottomup import geometry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The mean colour in 0-255 RGB: what padding is filled with, so it normalises to 0.
FILL_COLOUR = tuple(255.0 * m for m in IMAGENET_MEAN)


@dataclass(frozen=True)
class Augmentation:
    """Parameters of the random training affine.

    Attributes:
        rotation: maximum absolute rotation in degrees (uniform in ``[-rotation, rotation]``).
        scale: ``(low, high)`` range of the random zoom on top of the fit-to-input scale (uniform).
        translate: maximum absolute shift per axis, in input pixels (uniform).
        flip: probability of a horizontal mirror.
    """

    rotation: float = 30.0
    scale: tuple[float, float] = (0.75, 1.5)
    translate: float = 40.0
    flip: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"Augmentation.scale must be 0 < low <= high, got {self.scale}")
        if self.rotation < 0 or self.translate < 0:
            raise ValueError(f"Augmentation.rotation and .translate must be >= 0, got {self.rotation}, "
                             f"{self.translate}")
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"Augmentation.flip is a probability, got {self.flip}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Augmentation":
        """From a ``data.augment`` config block (keys ``rotation``, ``scale``, ``translate``, ``flip``)."""
        return cls(rotation=float(cfg.get("rotation", cls.rotation)), scale=tuple(cfg.get("scale", cls.scale)),
                   translate=float(cfg.get("translate", cls.translate)), flip=float(cfg.get("flip", cls.flip)))


@dataclass
class Warped:
    """One image and its annotations in input coordinates.

    Attributes:
        image: ``[S, S, 3]`` uint8 RGB.
        keypoints: ``[N, K, 3]`` float64 (x, y, v) in input pixels; joints that left the input have ``v = 0``.
        mask: ``[S, S]`` uint8, 1 = use, 0 = ignore.
        matrix: ``[3, 3]`` float64 image -> input affine (a mirror when its determinant is negative).
    """

    image: np.ndarray
    keypoints: np.ndarray
    mask: np.ndarray
    matrix: np.ndarray


class Transform(Protocol):
    """What a dataset calls: image ``[H, W, 3]`` uint8, keypoints ``[N, K, 3]`` image pixels, mask ``[H, W]``."""

    size: int

    def __call__(self, image: np.ndarray, keypoints: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> Warped: ...


def warp(image: np.ndarray, keypoints: np.ndarray, mask: np.ndarray, matrix: np.ndarray, size: int) -> Warped:
    """Warp an image ``[H, W, 3]``, keypoints ``[N, K, 3]`` and mask ``[H, W]`` into a ``size`` x ``size`` input.

    Joints that land outside the input area ``[-0.5, size - 0.5)`` become unlabelled (``v = 0``).
    """
    m = geometry.cv2_matrix(matrix)
    out_image = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=FILL_COLOUR)
    out_mask = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=1)
    kpts = geometry.apply(matrix, np.asarray(keypoints, dtype=np.float64))
    if kpts.size:
        x, y = kpts[..., 0], kpts[..., 1]
        outside = (x < -0.5) | (x >= size - 0.5) | (y < -0.5) | (y >= size - 0.5)
        kpts[..., 2] = np.where(outside, 0.0, kpts[..., 2])
    return Warped(out_image, kpts, out_mask, np.asarray(matrix, dtype=np.float64))


def train_matrix(width: int, height: int, size: int, augmentation: Augmentation,
                 rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Draw a random image -> input affine for an image of ``(width, height)``; returns ``(matrix, flipped)``.

    The image centre goes to the input centre (plus the random shift) at ``size / max(width, height)`` times the
    random zoom, rotated about that centre; the mirror, if drawn, is applied last in input coordinates.
    """
    angle = rng.uniform(-augmentation.rotation, augmentation.rotation)
    zoom = rng.uniform(*augmentation.scale)
    shift = rng.uniform(-augmentation.translate, augmentation.translate, size=2)
    flipped = bool(rng.random() < augmentation.flip)
    matrix = geometry.centred(width, height, size, zoom * size / max(width, height), angle, (shift[0], shift[1]))
    if flipped:
        matrix = geometry.hflip(size) @ matrix
    return matrix, flipped


class TrainTransform:
    """Random affine + horizontal flip into a square ``size`` input (see the module docstring)."""

    def __init__(self, size: int, flip_index: Sequence[int], augmentation: Augmentation | None = None) -> None:
        self.size = int(size)
        self.flip_index = np.asarray(flip_index, dtype=np.int64)
        self.augmentation = augmentation or Augmentation()

    def __call__(self, image: np.ndarray, keypoints: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> Warped:
        matrix, flipped = train_matrix(image.shape[1], image.shape[0], self.size, self.augmentation, rng)
        kpts = np.asarray(keypoints, dtype=np.float64)
        if flipped:
            # After a mirror the person's left joints show where right joints were: swap channels, x is mirrored by
            # the matrix.
            kpts = kpts[:, self.flip_index]
        return warp(image, kpts, mask, matrix, self.size)


class EvalTransform:
    """Fit into a square ``size`` canvas keeping the aspect, centred; no randomness."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: np.ndarray, keypoints: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator | None = None) -> Warped:
        matrix, _ = geometry.fit_into(image.shape[1], image.shape[0], self.size)
        return warp(image, keypoints, mask, matrix, self.size)


def normalize(image: np.ndarray) -> Tensor:
    """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32, ImageNet mean/std normalised.

    Computed in numpy: torch's intra-op thread pool costs more than the arithmetic on images this small.
    """
    scale = np.float32(1.0 / 255.0) / np.asarray(IMAGENET_STD, dtype=np.float32)
    shift = np.asarray(IMAGENET_MEAN, dtype=np.float32) / np.asarray(IMAGENET_STD, dtype=np.float32)
    x = image.astype(np.float32) * scale - shift
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def denormalize(image: Tensor) -> np.ndarray:
    """Inverse of :func:`normalize` for drawing: ``[3, H, W]`` or ``[B, 3, H, W]`` -> ``[..., H, W, 3]`` uint8 RGB."""
    x = image.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = (x * std + mean).mul(255.0).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).numpy()
