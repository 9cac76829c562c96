"""What every decoder does last: keep plausible people, remove duplicates, rank, cap and clip."""

from __future__ import annotations

import torch
from torch import Tensor

from bottomup.decoders.matching import pose_nms
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton


class PoseSelection:
    """Options shared by all decoders for the final choice of people.

    Args:
        skeleton: the keypoint layout (its OKS sigmas drive pose NMS).
        max_people: at most this many people per image, the best-scoring ones.
        min_keypoints: drop people with fewer grouped (not filled) keypoints than this.
        min_score: drop people whose person score is below this.
        pose_nms_threshold: OKS above which a lower-scoring person is a duplicate of a kept one and is removed;
            ``None`` disables pose NMS.
    """

    def __init__(self, skeleton: Skeleton, max_people: int = 30, min_keypoints: int = 1, min_score: float = 0.0,
                 pose_nms_threshold: float | None = None) -> None:
        if max_people < 1:
            raise ValueError(f"max_people must be >= 1, got {max_people}")
        self.skeleton = skeleton
        self.max_people = int(max_people)
        self.min_keypoints = int(min_keypoints)
        self.min_score = float(min_score)
        self.pose_nms_threshold = None if pose_nms_threshold is None else float(pose_nms_threshold)
        self._sigmas = torch.tensor(skeleton.sigmas)

    def select(self, keypoints: Tensor, scores: Tensor, grouped: Tensor, width: int, height: int) -> Poses:
        """Final people of one image.

        Args:
            keypoints: ``[P, K, 3]`` candidates in map pixels.
            scores: ``[P]`` person scores.
            grouped: ``[P]`` number of keypoints each person was grouped from.
            width, height: map size; coordinates are clipped to the map area ``[-0.5, W - 0.5]``.
        """
        keep = (grouped >= self.min_keypoints) & (scores >= self.min_score)
        keypoints, scores = keypoints[keep], scores[keep]
        keypoints = keypoints.clone()
        keypoints[..., 0].clamp_(-0.5, width - 0.5)
        keypoints[..., 1].clamp_(-0.5, height - 0.5)
        if self.pose_nms_threshold is not None:
            order = pose_nms(keypoints, scores, self._sigmas, self.pose_nms_threshold)
        else:
            order = torch.argsort(scores, descending=True, stable=True)
        order = order[: self.max_people]
        return Poses(keypoints[order], scores[order])
