"""HRNet (Sun et al. 2019, "Deep High-Resolution Representation Learning for Human Pose Estimation").

A stride-4 stem and a stage of Bottlenecks, then stages 2-4 that each add a branch at half the previous resolution
and repeat *modules*: BasicBlocks on every branch followed by a fusion that sums every branch, resampled, into every
other. As in HigherHRNet, the last module outputs only the stride-4 branch unless ``return_all_branches``.

Module and attribute names follow the reference implementation so that its checkpoints load without renaming keys.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from bottomup.trunks.base import FeatureInfo, Trunk
from bottomup.trunks.layers import BN_MOMENTUM, BasicBlock, Bottleneck, conv_bn, init_weights

STEM_CHANNELS = 64
NUM_BRANCHES = 4


class HighResolutionModule(nn.Module):
    """BasicBlocks on each branch, then multi-resolution fusion.

    ``forward`` maps a list of ``[B, channels[i], H / 2^i, W / 2^i]`` to the same list (or to its first entry only,
    as a one-element list, when ``multi_scale_output`` is false).
    """

    def __init__(self, channels: Sequence[int], num_blocks: int, multi_scale_output: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c) for _ in range(num_blocks))) for c in channels)
        outputs = range(len(channels)) if multi_scale_output else range(1)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._fuse_layer(channels, source, target) for source in range(len(channels)))
            for target in outputs)
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _fuse_layer(channels: Sequence[int], source: int, target: int) -> nn.Module:
        """Brings branch ``source`` to the width of branch ``target``; the resolution change is done here for
        coarser targets (strided convs) and in ``forward`` for finer ones (nearest upsampling)."""
        if source == target:
            return nn.Identity()
        if source > target:
            return conv_bn(channels[source], channels[target], 1, relu=False)
        steps = target - source
        # Intermediate steps keep the source width; only the last one changes width, and it has no ReLU because the
        # sum of all branches is rectified afterwards.
        return nn.Sequential(*(
            conv_bn(channels[source], channels[target] if k == steps - 1 else channels[source], 3, stride=2,
                    relu=k < steps - 1)
            for k in range(steps)))

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        x = [branch(t) for branch, t in zip(self.branches, x)]
        fused: list[Tensor] = []
        for target, layers in enumerate(self.fuse_layers):
            size = x[target].shape[-2:]
            total = x[target]
            for source, layer in enumerate(layers):
                if source == target:
                    continue
                y = layer(x[source])
                if source > target:
                    # Upsampling to the target's exact size, not by 2^k, keeps inputs whose sides are not multiples
                    # of 32 working: the strided convs round odd sizes up.
                    y = F.interpolate(y, size=size, mode="nearest")
                total = total + y
            fused.append(self.relu(total))
        return fused


def _transition(in_channels: Sequence[int], out_channels: Sequence[int]) -> nn.ModuleList:
    """Layers from one stage's branches to the next stage's, which has one more branch.

    Existing branches pass unchanged (or through a 3x3 conv-BN-ReLU if their width changes); the new branch is a
    3x3 stride-2 conv-BN-ReLU from the coarsest existing one.
    """
    layers: list[nn.Module] = []
    for i, out in enumerate(out_channels):
        if i < len(in_channels):
            layers.append(nn.Identity() if in_channels[i] == out else conv_bn(in_channels[i], out, 3))
        else:
            # The extra Sequential level mirrors the reference code, whose keys read ``transitionN.i.0.*``.
            layers.append(nn.Sequential(conv_bn(in_channels[-1], out, 3, stride=2)))
    return nn.ModuleList(layers)


def _stage(in_channels: Sequence[int], channels: Sequence[int], num_modules: int, num_blocks: int,
           multi_scale_output: bool) -> tuple[nn.ModuleList, nn.Sequential]:
    """The transition from branches of widths ``in_channels`` into a stage of branch widths ``channels``, and the
    stage; ``multi_scale_output`` applies to its last module only."""
    modules = nn.Sequential(*(
        HighResolutionModule(channels, num_blocks, multi_scale_output or m < num_modules - 1)
        for m in range(num_modules)))
    return _transition(in_channels, channels), modules


class HRNet(Trunk):
    """HRNet trunk: ``images [B, 3, H, W]`` -> ``[[B, width, H / 4, W / 4]]``, or with ``return_all_branches`` the
    four branches ``[B, width * 2^i, H / 2^(i + 2), W / 2^(i + 2)]``, finest first.

    Args:
        width: channels of the stride-4 branch (32 for HRNet-W32); branch ``i`` has ``width * 2^i``.
        stage_modules: modules in stages 1-4. A stage-1 module is ``num_blocks`` Bottlenecks (64 -> 256 channels);
            a module of stages 2-4 is ``num_blocks`` BasicBlocks per branch then a fusion. Published: ``(1, 1, 4, 3)``.
        num_blocks: residual blocks per branch in every module (published: 4).
        return_all_branches: output every branch of the last module instead of the stride-4 one only.
        name: the config's name, kept for logging.
    """

    def __init__(self, width: int = 32, stage_modules: Sequence[int] = (1, 1, 4, 3), num_blocks: int = 4,
                 return_all_branches: bool = False, name: str = "hrnet") -> None:
        super().__init__()
        if len(stage_modules) != NUM_BRANCHES or min(stage_modules) < 1 or num_blocks < 1 or width < 1:
            raise ValueError(f"HRNet needs 4 positive stage module counts, num_blocks >= 1 and width >= 1, got "
                             f"stage_modules={stage_modules}, num_blocks={num_blocks}, width={width}")
        self.name = name
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        stage1_channels = STEM_CHANNELS * Bottleneck.expansion
        self.layer1 = nn.Sequential(*(
            Bottleneck(STEM_CHANNELS if i == 0 else stage1_channels, STEM_CHANNELS)
            for i in range(stage_modules[0] * num_blocks)))

        widths = [width * 2 ** i for i in range(NUM_BRANCHES)]
        self.transition1, self.stage2 = _stage([stage1_channels], widths[:2], stage_modules[1], num_blocks, True)
        self.transition2, self.stage3 = _stage(widths[:2], widths[:3], stage_modules[2], num_blocks, True)
        self.transition3, self.stage4 = _stage(widths[:3], widths, stage_modules[3], num_blocks,
                                               return_all_branches)
        strides = tuple(4 * 2 ** i for i in range(NUM_BRANCHES))
        if return_all_branches:
            self.feature_info = FeatureInfo(tuple(widths), strides)
        else:
            self.feature_info = FeatureInfo((width,), strides[:1])
        init_weights(self)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        branches = [self.layer1(x)]
        for transition, stage in ((self.transition1, self.stage2), (self.transition2, self.stage3),
                                  (self.transition3, self.stage4)):
            # The new branch grows from the coarsest existing one; existing branches map one to one.
            branches = stage([layer(branches[min(i, len(branches) - 1)]) for i, layer in enumerate(transition)])
        return branches
