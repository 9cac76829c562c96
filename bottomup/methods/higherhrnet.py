"""HigherHRNet: Associative Embedding plus heatmaps at twice the resolution, supervised at both resolutions.

Targets are the AE targets at stride ``stride`` plus Gaussian heatmaps (and an ignore mask) at ``stride / 2``;
decoding averages the two heatmap resolutions before AE grouping (:class:`~bottomup.decoders.HigherHRNetDecoder`).
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from bottomup.decoders.higherhrnet import HigherHRNetDecoder
from bottomup.methods import targets
from bottomup.methods.ae import AECodec
from bottomup.methods.base import Outputs, OutputSpec
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton


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

    def _highres(self, keypoints, input_size) -> Tensor:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride_highres)
        width, height = targets.map_size(input_size, self.stride_highres)
        return targets.render_heatmaps(kpts, width, height, self.sigma_highres)[0]

    def encode(self, keypoints, input_size, mask=None) -> dict[str, Tensor]:
        encoded = super().encode(keypoints, input_size, mask)
        encoded["heatmaps_highres"] = self._highres(keypoints, input_size)
        encoded["mask_highres"] = targets.downsample_mask(mask, input_size, self.stride_highres)
        return encoded

    def ideal_outputs(self, keypoints, input_size) -> Outputs:
        outputs = super().ideal_outputs(keypoints, input_size)
        outputs["heatmaps_highres"] = self._highres(keypoints, input_size)
        return outputs

    def decode_maps(self, outputs: Mapping[str, Tensor]) -> list[Poses]:
        return self.decoder(outputs["heatmaps"], self.joint_tags(outputs["tags"]), outputs["heatmaps_highres"])
