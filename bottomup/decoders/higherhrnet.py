"""HigherHRNet decoding (Cheng et al., CVPR'20): heatmaps aggregated across resolutions, then AE grouping.

The 1/4-resolution heatmaps are upsampled bilinearly to the 1/2 resolution of the high-resolution branch and the two
are averaged (lazily, at the pixels peak finding looks at: :class:`~bottomup.decoders.peaks.AggregatedMaps`); tags
(predicted at 1/4 only) are read bilinearly where needed, which equals upsampling them. Grouping then runs at the
higher resolution, where peaks are better localised, and keypoints are returned in the grid of the 1/4 heatmaps.
"""

from __future__ import annotations

from torch import Tensor

from bottomup.decoders import checks
from bottomup.decoders.ae import AEDecoder
from bottomup.decoders.peaks import AggregatedMaps
from bottomup.poses import Poses


class HigherHRNetDecoder(AEDecoder):
    """AE grouping on heatmaps aggregated across two resolutions.

    Call with ``heatmaps [B, K, H, W]``, ``tags [B, K, H, W]`` or ``[B, K, D, H, W]`` and
    ``heatmaps_highres [B, K, 2H, 2W]``. Returns one :class:`Poses` per image, coordinates in the grid of
    ``heatmaps`` (the 1/4 maps). Options as :class:`~bottomup.decoders.ae.AEDecoder`.
    """

    def __call__(self, heatmaps: Tensor, tags: Tensor, heatmaps_highres: Tensor) -> list[Poses]:  # type: ignore[override]
        heatmaps, tags = self._check(heatmaps, tags)
        k = self.skeleton.num_keypoints
        checks.check_rank("heatmaps_highres", heatmaps_highres, (4,), "[B, K, 2H, 2W]")
        checks.check_channels("heatmaps_highres", heatmaps_highres, k,
                              f"skeleton {self.skeleton.name!r} has {k} keypoints")
        checks.check_same_batch_and_size("heatmaps", heatmaps, "heatmaps_highres", heatmaps_highres, size_factor=2)
        aggregated = AggregatedMaps(checks.as_float(heatmaps_highres), heatmaps)
        poses = self.group(aggregated, tags)
        # Grid of the 2x maps -> grid of the 1/4 maps: x_low = (x_high + 0.5) / 2 - 0.5.
        return [p.transformed(0.5, -0.25) for p in poses]
