"""Seeded degradations of ideal maps, for studying how gracefully each grouping strategy fails.

Two kinds: changes to the people before rendering (peak jitter, joint dropout -- the scoring still uses the true
annotations), and noise added to the rendered maps by output kind (heatmaps and fields, tags, displacements). Every
random draw is seeded by ``(seed, image id)`` only, so all methods see the same degraded people.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from bottomup.methods.base import OutputSpec


@dataclass(frozen=True)
class Degradation:
    """Degradation levels (all 0: ideal maps).

    Attributes:
        noise: std of Gaussian noise added to heatmaps and vector fields (values of order 1).
        jitter: std, in map pixels, of a random shift of every labelled keypoint before rendering.
        dropout: probability that a labelled keypoint is left out of the maps.
        tag_noise: std of Gaussian noise added to tag maps (ideal tags are 1 apart between people).
        displacement_noise: std, in map pixels, of Gaussian noise added to displacement maps.
    """

    noise: float = 0.0
    jitter: float = 0.0
    dropout: float = 0.0
    tag_noise: float = 0.0
    displacement_noise: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise ValueError(f"degrade.{name} must be >= 0, got {value}")
        if self.dropout > 1:
            raise ValueError(f"degrade.dropout is a probability, got {self.dropout}")

    @property
    def active(self) -> bool:
        return any(v > 0 for v in asdict(self).values())

    def people(self, keypoints: np.ndarray, stride: int, seed: int, image_id: int) -> np.ndarray:
        """Jittered / thinned copy of ``keypoints [N, K, 3]`` (input pixels); jitter is in map pixels at ``stride``."""
        out = np.array(keypoints, dtype=np.float32, copy=True)
        if not (self.jitter or self.dropout) or out.size == 0:
            return out
        rng = np.random.default_rng([seed, image_id, 1])
        labelled = out[..., 2] > 0
        out[..., :2] += rng.normal(0.0, self.jitter * stride, out[..., :2].shape) * labelled[..., None]
        dropped = labelled & (rng.random(labelled.shape) < self.dropout)
        out[..., 2] = np.where(dropped, 0.0, out[..., 2])
        return out

    def maps(self, outputs: Mapping[str, Tensor], specs: Mapping[str, OutputSpec], seed: int,
             image_id: int) -> dict[str, Tensor]:
        """Noisy copies of unbatched ``outputs`` according to each output's kind."""
        std_by_kind = {"heatmap": self.noise, "field": self.noise, "tag": self.tag_noise,
                       "displacement": self.displacement_noise}
        noisy = {}
        for i, (name, maps) in enumerate(outputs.items()):
            std = std_by_kind[specs[name].kind]
            if std > 0:
                state = np.random.SeedSequence([seed, image_id, 2, i]).generate_state(1)[0]
                gen = torch.Generator().manual_seed(int(state))
                maps = maps + std * torch.randn(maps.shape, generator=gen)
            noisy[name] = maps
        return noisy
