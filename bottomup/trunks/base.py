"""The small interface every trunk offers, so that any head runs on any trunk.

A trunk maps an image batch to one or more feature maps, highest resolution first, and says their channels and
strides. Multi-stack trunks (Stacked Hourglass) call a head once per stack and feed its predictions back into the
next stack; single-stack trunks call one head once. :meth:`Trunk.run` hides the difference from the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and stride (input pixels per feature pixel) of each feature map a trunk returns, finest first."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ValueError(f"FeatureInfo needs one stride per feature map, got channels={self.channels} "
                             f"strides={self.strides}")


class Trunk(nn.Module):
    """Base class for trunks.

    Subclasses set ``feature_info`` and ``num_stacks`` in ``__init__`` and implement :meth:`forward` (single stack)
    or override :meth:`run` (several stacks).
    """

    feature_info: FeatureInfo
    num_stacks: int = 1

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images`` ``[B, 3, H, W]`` -> feature maps ``[B, C_i, H / s_i, W / s_i]``, finest first."""
        raise NotImplementedError

    def attach_heads(self, heads: Sequence[nn.Module]) -> None:
        """Called once by the model with its heads (one per stack), before any forward pass.

        Multi-stack trunks create here the layers that re-inject each stack's predictions into the next one, sized by
        ``head.prediction_channels``. Single-stack trunks need nothing.
        """

    def run(self, images: Tensor, heads: Sequence[nn.Module]) -> list[dict[str, Tensor]]:
        """Features -> heads: every supervised prediction, in order; the last one is the model's output."""
        return heads[0](self(images))
