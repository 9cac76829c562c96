"""Building blocks shared by the method heads: prediction branches, channel splitting, staged refinement.

Every head reads the trunk's finest feature map (stride 4 for both trunks). Prediction convs are 1x1 with a bias and
start near zero (normal, std 0.001, as HigherHRNet's final layers), so the first heatmap losses equal the targets'
energy and the first tags and displacements are ~0; the conv-BN layers before them use the trunks' Kaiming init.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from bottomup.methods.base import Codec, Head, Outputs, OutputSpec
from bottomup.trunks.base import FeatureInfo
from bottomup.trunks.layers import conv_bn, init_weights

PREDICTION_INIT_STD = 0.001


def prediction_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """1x1 conv with bias, initialised near zero: ``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, std=PREDICTION_INIT_STD)
    nn.init.zeros_(conv.bias)
    return conv


class Branch(nn.Module):
    """A tower of ``num_convs`` conv-BN-ReLU layers (``channels`` wide, ``kernel_size`` square) and a prediction conv.

    ``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``. With ``num_convs = 0`` it is the prediction conv alone.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 0, channels: int = 64,
                 kernel_size: int = 3) -> None:
        super().__init__()
        if num_convs < 0 or channels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"a head branch needs num_convs >= 0, channels >= 1 and an odd kernel_size, got "
                             f"num_convs={num_convs}, channels={channels}, kernel_size={kernel_size}")
        self.tower = nn.Sequential(*(conv_bn(in_channels if i == 0 else channels, channels, kernel_size)
                                     for i in range(num_convs)))
        init_weights(self.tower)
        self.predict = prediction_conv(channels if num_convs else in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.predict(self.tower(x))


def trunk_stride_outputs(codec: Codec, feature_info: FeatureInfo) -> dict[str, OutputSpec]:
    """The codec's outputs at the trunk's finest stride, in output order; raises if the codec's stride differs."""
    stride = feature_info.strides[0]
    if codec.stride != stride:
        raise ValueError(f"the codec predicts at stride {codec.stride} but the trunk's finest features are at "
                         f"stride {stride}; set the method's codec.stride to {stride}")
    return {name: spec for name, spec in codec.outputs.items() if spec.stride == stride}


def split_outputs(maps: Tensor, specs: Mapping[str, OutputSpec]) -> Outputs:
    """``[B, sum of channels, H, W]`` -> one ``[B, spec.channels, H, W]`` view per name, in ``specs`` order."""
    return dict(zip(specs, maps.split([spec.channels for spec in specs.values()], dim=1)))


class StagedBranchHead(Head):
    """One :class:`Branch` per output, then refinement stages that see the features and the previous prediction.

    Stage 1 maps the trunk features ``[B, C, H, W]`` to every output (all at the trunk stride) through its own
    branch; each later stage does the same from ``concat(features, previous stage's outputs in output order)``
    (OpenPose's multi-stage refinement, Cao et al. CVPR'17). Every stage's outputs are returned, so every stage is
    supervised; the last is the prediction.

    Args:
        codec: the method's codec; all its outputs must be at the trunk's finest stride.
        feature_info: the trunk's features (only the finest map is used).
        stages: number of prediction stages (>= 1).
        channels: width of each branch's conv tower.
        num_convs: conv-BN-ReLU layers per branch before its 1x1 prediction conv.
        kernel_size: kernel of those convs.
    """

    def __init__(self, codec: Codec, feature_info: FeatureInfo, stages: int = 1, channels: int = 64,
                 num_convs: int = 2, kernel_size: int = 3) -> None:
        super().__init__(codec, feature_info)
        specs = trunk_stride_outputs(codec, feature_info)
        if specs.keys() != codec.outputs.keys():
            raise ValueError(f"{type(self).__name__} predicts only at the trunk stride, but the codec also has "
                             f"outputs {sorted(codec.outputs.keys() - specs.keys())} at other strides")
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        features = feature_info.channels[0]
        self.stages = nn.ModuleList(
            nn.ModuleDict({name: Branch(features if s == 0 else features + self.prediction_channels, spec.channels,
                                        num_convs, channels, kernel_size)
                           for name, spec in specs.items()})
            for s in range(stages))

    def forward(self, features: list[Tensor]) -> list[Outputs]:
        """``features[0] [B, C, H, W]`` -> one dict per stage of ``{name: [B, spec.channels, H, W]}``."""
        x = features[0]
        outputs: list[Outputs] = []
        for stage in self.stages:
            inputs = torch.cat([x, self.reinjection(outputs[-1])], dim=1) if outputs else x
            outputs.append({name: branch(inputs) for name, branch in stage.items()})
        return outputs
