"""Stacked Hourglass (Newell et al. 2016), with the sizes Associative Embedding uses (Newell et al. 2017).

Built from the 2016 hourglass's residual modules; AE's own code widens the levels the same way (+128 channels per
level) but builds them from plain conv-ReLU layers.

A stride-4 stem, then ``num_stacks`` hourglasses. Each stack's features go to that stack's head, and the head's
prediction is fed back, with the features, into the input of the next stack (intermediate supervision).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from bottomup.trunks.base import FeatureInfo, Trunk
from bottomup.trunks.layers import BN_MOMENTUM, conv_bn, init_weights

STEM_CHANNELS = 64
STEM_RESIDUAL_CHANNELS = 128


class Residual(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1 (C/2), BN-ReLU-3x3 (C/2), BN-ReLU-1x1 (C), plus a skip (1x1 conv
    when the channel count changes). ``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """One recursive hourglass of ``depth`` levels: ``[B, C, H, W]`` -> ``[B, C, H, W]``.

    Each level keeps a residual skip branch at its resolution and recurses on a max-pooled copy, whose result is
    upsampled (nearest) and added. ``width_increase`` widens every level below the top (AE: 256, 384, 512, ...).
    """

    def __init__(self, depth: int, channels: int, width_increase: int = 0) -> None:
        super().__init__()
        inner = channels + width_increase
        self.skip = Residual(channels, channels)
        self.down = nn.Sequential(nn.MaxPool2d(2, 2), Residual(channels, inner))
        self.inner: nn.Module = (Hourglass(depth - 1, inner, width_increase) if depth > 1
                                 else Residual(inner, inner))
        self.up = Residual(inner, channels)

    def forward(self, x: Tensor) -> Tensor:
        low = self.up(self.inner(self.down(x)))
        # Upsampling to the skip's exact size, not by 2, keeps sides that are not multiples of 2^depth working.
        return self.skip(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


class StackedHourglass(Trunk):
    """Stacked Hourglass trunk: ``images [B, 3, H, W]`` -> each stack's features
    ``[B, channels, ceil(H / 4), ceil(W / 4)]``, handed to that stack's head by :meth:`run`.

    Args:
        num_stacks: hourglasses in sequence, each with its own head (Newell 2016: 8; AE: 4).
        channels: feature width C at stride 4 (256 in both papers).
        depth: downsamplings inside each hourglass (4 in both papers: stride 4 down to stride 64).
        width_increase: channels added per level inside each hourglass (Newell 2016: 0; AE: 128).
        name: the config's name, kept for logging.
    """

    def __init__(self, num_stacks: int = 4, channels: int = 256, depth: int = 4, width_increase: int = 0,
                 name: str = "hourglass") -> None:
        super().__init__()
        if num_stacks < 1 or depth < 1 or channels < 2 or width_increase < 0:
            raise ValueError(f"StackedHourglass needs num_stacks >= 1, depth >= 1, channels >= 2 and "
                             f"width_increase >= 0, got {num_stacks}, {depth}, {channels}, {width_increase}")
        self.name = name
        self.num_stacks = num_stacks
        self.channels = channels
        self.stem = nn.Sequential(
            conv_bn(3, STEM_CHANNELS, 7, stride=2),
            Residual(STEM_CHANNELS, STEM_RESIDUAL_CHANNELS),
            # Rounding up, like the stride-2 conv before it, gives ceil(side / 4): the codecs' map size.
            nn.MaxPool2d(2, 2, ceil_mode=True),
            Residual(STEM_RESIDUAL_CHANNELS, STEM_RESIDUAL_CHANNELS),
            Residual(STEM_RESIDUAL_CHANNELS, channels),
        )
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels, width_increase) for _ in range(num_stacks))
        self.features = nn.ModuleList(
            nn.Sequential(Residual(channels, channels), conv_bn(channels, channels, 1)) for _ in range(num_stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(num_stacks - 1))
        # Sized by the heads' prediction channels, so created in attach_heads.
        self.merge_predictions = nn.ModuleList()
        self.feature_info = FeatureInfo((channels,), (4,))
        init_weights(self)

    def attach_heads(self, heads: Sequence[nn.Module]) -> None:
        """Creates the 1x1 convs that map stack ``s``'s prediction (``head.prediction_channels`` channels at stride 4)
        to C channels for stack ``s + 1``; the last stack's prediction is not re-injected."""
        if len(heads) != self.num_stacks:
            raise ValueError(f"{self.num_stacks}-stack hourglass needs {self.num_stacks} heads, got {len(heads)}")
        reference = next(self.parameters())
        self.merge_predictions = nn.ModuleList(
            nn.Conv2d(head.prediction_channels, self.channels, 1) for head in heads[:-1])
        init_weights(self.merge_predictions)
        # The model may already have been moved to a device or dtype before attaching.
        self.merge_predictions.to(device=reference.device, dtype=reference.dtype)

    def run(self, images: Tensor, heads: Sequence[nn.Module]) -> list[dict[str, Tensor]]:
        """``images [B, 3, H, W]`` -> every stack's head outputs, concatenated in stack order (all supervised); the
        last dict is the final stack's final prediction."""
        if len(heads) != self.num_stacks or len(self.merge_predictions) != self.num_stacks - 1:
            raise RuntimeError(f"{self.num_stacks}-stack hourglass run with {len(heads)} heads and "
                               f"{len(self.merge_predictions)} re-injection layers: call attach_heads(heads) first")
        x = self.stem(images)
        outputs: list[dict[str, Tensor]] = []
        for s, head in enumerate(heads):
            features = self.features[s](self.hourglasses[s](x))
            stack_outputs = head([features])
            outputs.extend(stack_outputs)
            if s < self.num_stacks - 1:
                prediction = head.reinjection(stack_outputs[-1])
                x = x + self.merge_features[s](features) + self.merge_predictions[s](prediction)
        return outputs
