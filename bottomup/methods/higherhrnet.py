"""HigherHRNet: Associative Embedding plus heatmaps at twice the resolution, supervised at both resolutions.

Targets are the AE targets at stride ``stride`` plus Gaussian heatmaps (and an ignore mask) at ``stride / 2``;
decoding averages the two heatmap resolutions before AE grouping (:class:`~bottomup.decoders.HigherHRNetDecoder`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from bottomup.decoders.higherhrnet import HigherHRNetDecoder
from bottomup.methods import targets
from bottomup.methods.ae import AECodec, AEHead, AELoss
from bottomup.methods.base import Codec, GroupingMethod, Outputs, OutputSpec
from bottomup.methods.heads import prediction_conv, split_outputs
from bottomup.methods.losses import masked_mse
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton
from bottomup.trunks.base import FeatureInfo
from bottomup.trunks.layers import BN_MOMENTUM, BasicBlock, init_weights


class HigherHRNetCodec(AECodec):
    """AE targets at ``stride`` + heatmaps at ``stride / 2``.

    Args:
        sigma_highres: Gaussian sigma of the high-resolution heatmaps in *their* pixels (HigherHRNet uses the same
            value at both resolutions); default ``sigma``.
        Other arguments as :class:`~bottomup.methods.ae.AECodec`.
    """

    decoder_class = HigherHRNetDecoder

    def __init__(self, skeleton: Skeleton, stride: int = 4, sigma: float = 2.0, sigma_highres: float | None = None,
                 tag_dim: int = 1, max_people: int = 30, decoder: Mapping | None = None) -> None:
        if stride % 2:
            raise ValueError(f"HigherHRNet needs an even stride for its 2x branch, got {stride}")
        super().__init__(skeleton, stride, sigma, tag_dim, max_people, decoder)
        self.sigma_highres = self.sigma if sigma_highres is None else float(sigma_highres)
        self.stride_highres = self.stride // 2

    @property
    def outputs(self) -> dict[str, OutputSpec]:
        specs = super().outputs
        specs["heatmaps_highres"] = OutputSpec(self.skeleton.num_keypoints, self.stride_highres, "heatmap",
                                               "detection")
        return specs

    def highres_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """``(W, H)`` of the high-resolution maps: twice the stride-``stride`` maps, as the deconvolution makes them
        (``2 * ceil(input / stride)``, which exceeds ``ceil(input / (stride / 2))`` by one for some input sides that
        are not multiples of ``stride``, e.g. 509 and 510 at stride 4)."""
        width, height = targets.map_size(input_size, self.stride)
        return 2 * width, 2 * height

    def _highres(self, keypoints, input_size) -> Tensor:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride_highres)
        width, height = self.highres_size(input_size)
        return targets.render_heatmaps(kpts, width, height, self.sigma_highres)[0]

    def encode(self, keypoints, input_size, mask=None) -> dict[str, Tensor]:
        encoded = super().encode(keypoints, input_size, mask)
        encoded["heatmaps_highres"] = self._highres(keypoints, input_size)
        encoded["mask_highres"] = targets.downsample_mask(mask, input_size, self.stride_highres,
                                                          self.highres_size(input_size))
        return encoded

    def ideal_outputs(self, keypoints, input_size) -> Outputs:
        outputs = super().ideal_outputs(keypoints, input_size)
        outputs["heatmaps_highres"] = self._highres(keypoints, input_size)
        return outputs

    def decode_maps(self, outputs: Mapping[str, Tensor]) -> list[Poses]:
        return self.decoder(outputs["heatmaps"], self.joint_tags(outputs["tags"]), outputs["heatmaps_highres"])


class HigherHRNetHead(AEHead):
    """The AE head at stride 4, then HigherHRNet's deconvolution module to heatmaps at stride 2.

    As in the official code (one deconv, ``CAT_OUTPUT``): ``concat(features [B, C, H, W], stride-4 prediction
    [B, K + K * D, H, W])`` -> ConvTranspose2d 4x4 stride 2 padding 1 (no bias) -> BN -> ReLU -> ``num_blocks``
    BasicBlocks -> 1x1 conv -> ``heatmaps_highres [B, K, 2H, 2W]``. Returns one dict holding both resolutions.
    ``2H x 2W`` is the codec's high-resolution grid (:meth:`HigherHRNetCodec.highres_size`) for any input size.

    Args:
        deconv_channels: width of the deconvolution module (default: the trunk's width, 32 for HRNet-W32 as
            published).
        num_blocks: BasicBlocks after the deconvolution (published: 4).
        num_convs, channels, kernel_size: the stride-4 AE head's options (:class:`~bottomup.methods.ae.AEHead`).
    """

    def __init__(self, codec: Codec, feature_info: FeatureInfo, deconv_channels: int | None = None,
                 num_blocks: int = 4, num_convs: int = 0, channels: int | None = None, kernel_size: int = 3) -> None:
        super().__init__(codec, feature_info, num_convs, channels, kernel_size)
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        features = feature_info.channels[0]
        width = deconv_channels or features
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(features + self.prediction_channels, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            *(BasicBlock(width, width) for _ in range(num_blocks)),
        )
        init_weights(self.deconv)
        self.final_highres = prediction_conv(width, codec.outputs["heatmaps_highres"].channels)

    def forward(self, features: list[Tensor]) -> list[Outputs]:
        """``features[0] [B, C, H, W]`` -> ``[{"heatmaps", "tags" at H x W, "heatmaps_highres" at 2H x 2W}]``."""
        x = features[0]
        low = self.final(x)
        highres = self.final_highres(self.deconv(torch.cat([x, low], dim=1)))
        return [{**split_outputs(low, self.specs), "heatmaps_highres": highres}]


class HigherHRNetLoss(AELoss):
    """The AE loss at stride 4 plus masked heatmap MSE at stride 2 (multi-resolution supervision).

    Extra targets: ``heatmaps_highres [B, K, 2H, 2W]``, ``mask_highres [B, 1, 2H, 2W]``. Parts: ``heatmap``,
    ``pull``, ``push``, ``heatmap_highres``. Defaults are HigherHRNet's (heatmap factors 1 at both resolutions).

    Args:
        heatmap_highres_weight: factor of the stride-2 heatmap term.
        Other arguments as :class:`~bottomup.methods.ae.AELoss`.
    """

    def __init__(self, codec: Codec, heatmap_weight: float = 1.0, heatmap_highres_weight: float = 1.0,
                 pull_weight: float = 1e-3, push_weight: float = 5e-4, push: str = "exp",
                 stage_weights: Sequence[float] | None = None) -> None:
        super().__init__(codec, heatmap_weight, pull_weight, push_weight, push, stage_weights)
        self.heatmap_highres_weight = float(heatmap_highres_weight)

    def parts(self, prediction: Outputs, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        highres = masked_mse(prediction["heatmaps_highres"], targets["heatmaps_highres"], targets["mask_highres"])
        return {**super().parts(prediction, targets), "heatmap_highres": self.heatmap_highres_weight * highres}


class HigherHRNet(GroupingMethod):
    """HigherHRNet (Cheng et al., CVPR'20): AE plus a stride-2 heatmap branch, heatmaps aggregated across both."""

    name = "higherhrnet"
    codec_class = HigherHRNetCodec
    head_class = HigherHRNetHead
    loss_class = HigherHRNetLoss
