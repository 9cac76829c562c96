"""Associative Embedding: keypoint heatmaps + one tag (embedding) map per joint, grouped by tag similarity.

Targets (Newell et al.): a Gaussian per labelled joint, people combined by maximum, and for the pull/push loss the
flat map index of every labelled joint of every person (``joints [max_people, K, 2]``: index, labelled flag). The
tags have no target values -- the loss only asks a person's tags to agree and different people's to differ -- so the
ideal tag maps give person ``n`` the value ``n + 1`` wherever its Gaussian dominates.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from bottomup.decoders.ae import AEDecoder
from bottomup.methods import targets
from bottomup.methods.base import Codec, Outputs, OutputSpec
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton


class AECodec(Codec):
    """Encodes people as heatmaps + AE joint indices; decodes with :class:`~bottomup.decoders.AEDecoder`.

    Args:
        skeleton: keypoint layout.
        stride: input pixels per map pixel.
        sigma: Gaussian sigma of the heatmaps, in map pixels.
        tag_dim: dimension of each joint's tag.
        max_people: people per image kept for the pull/push loss (fixed so that batches collate).
        decoder: options of :class:`~bottomup.decoders.AEDecoder`.
    """

    decoder_class = AEDecoder

    def __init__(self, skeleton: Skeleton, stride: int = 4, sigma: float = 2.0, tag_dim: int = 1,
                 max_people: int = 30, decoder: Mapping | None = None) -> None:
        super().__init__(skeleton, stride, sigma, decoder)
        if tag_dim < 1:
            raise ValueError(f"tag_dim must be >= 1, got {tag_dim}")
        self.tag_dim = int(tag_dim)
        self.max_people = int(max_people)
        self.decoder = self.decoder_class(skeleton, **self.decoder_options)

    @property
    def outputs(self) -> dict[str, OutputSpec]:
        k = self.skeleton.num_keypoints
        return {
            "heatmaps": OutputSpec(k, self.stride, "heatmap", "detection"),
            "tags": OutputSpec(k * self.tag_dim, self.stride, "tag", "grouping"),
        }

    def encode(self, keypoints, input_size, mask=None) -> dict[str, Tensor]:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride)
        width, height = targets.map_size(input_size, self.stride)
        heatmaps, _ = targets.render_heatmaps(kpts, width, height, self.sigma)
        return {"heatmaps": heatmaps, "mask": targets.downsample_mask(mask, input_size, self.stride),
                "joints": self._joint_indices(kpts, width, height)}

    def _joint_indices(self, kpts: Tensor, width: int, height: int) -> Tensor:
        """``[max_people, K, 2]`` long: flat index ``row * W + col`` of each labelled joint and a 0/1 flag."""
        k = self.skeleton.num_keypoints
        joints = torch.zeros(self.max_people, k, 2, dtype=torch.long)
        kept = kpts[targets.inside(kpts, width, height).any(dim=1)][: self.max_people]
        labelled = targets.inside(kept, width, height)
        col = kept[..., 0].round().clamp(0, width - 1).long()
        row = kept[..., 1].round().clamp(0, height - 1).long()
        joints[: len(kept), :, 0] = (row * width + col) * labelled
        joints[: len(kept), :, 1] = labelled.long()
        return joints

    def ideal_outputs(self, keypoints, input_size) -> Outputs:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride)
        width, height = targets.map_size(input_size, self.stride)
        person_tags = torch.arange(1, kpts.shape[0] + 1, dtype=torch.float32)
        heatmaps, tags = targets.render_heatmaps(kpts, width, height, self.sigma, tags=person_tags)
        k = self.skeleton.num_keypoints
        tag_maps = torch.zeros(k, self.tag_dim, height, width)
        tag_maps[:, 0] = tags
        return {"heatmaps": heatmaps, "tags": tag_maps.view(k * self.tag_dim, height, width)}

    def joint_tags(self, tags: Tensor) -> Tensor:
        """``[B, K * D, H, W]`` tag output -> ``[B, K, D, H, W]`` (D read from the channel count)."""
        b, c, h, w = tags.shape
        k = self.skeleton.num_keypoints
        if c % k:
            raise ValueError(f"tags has {c} channels, not a multiple of the {k} keypoints")
        return tags.view(b, k, c // k, h, w)

    def decode_maps(self, outputs: Mapping[str, Tensor]) -> list[Poses]:
        return self.decoder(outputs["heatmaps"], self.joint_tags(outputs["tags"]))

    def flip_outputs(self, outputs: Mapping[str, Tensor]) -> Outputs:
        return {name: self.flip_channels(outputs[name], spec.kind) for name, spec in self.outputs.items()}
