"""How well associative-embedding tags tell people apart, read at the annotated joints.

The oracle halves (``bottomup.evaluate oracle=heatmaps``) say how much AP a model's tags lose; this says why: for
every labelled joint of an image with two or more people, the distance from its tag to its own person's mean tag
and to the nearest other person's mean tag (the joint is *confused* when the other is nearer, so grouping by tag
would give it away), and how far apart the two people stand. ``experiments/tag_separation.py`` prints the summary
for a trained checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bottomup import geometry
from bottomup.methods.losses import person_tags


@dataclass
class TagSeparation:
    """Per labelled joint of the images with two or more labelled people, as 1-D arrays of equal length.

    Attributes:
        own: distance from the joint's tag to its own person's mean tag.
        other: distance to the nearest mean tag of another person of the image.
        centre_gap: distance between the own person's centre and the centre of the person of that nearest mean
            tag, divided by the own person's size (a person's centre is the mean of its labelled joints' pixels, its
            size the longer side of their bounding box, at least one pixel).
        neighbour_gap: distance from the own person's centre to the nearest other person's centre, over the own
            person's size (under about 0.5 the two overlap).
    """

    own: np.ndarray
    other: np.ndarray
    centre_gap: np.ndarray
    neighbour_gap: np.ndarray

    @property
    def confused(self) -> np.ndarray:
        """Joints whose tag is nearer another person's mean tag than their own."""
        return self.other < self.own

    @staticmethod
    def concatenate(parts: list["TagSeparation"]) -> "TagSeparation":
        return TagSeparation(*(np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0)
                               for name in ("own", "other", "centre_gap", "neighbour_gap")))


def tag_separation(tags: Tensor, joints: Tensor) -> TagSeparation:
    """Tag distances at the labelled joints of a batch (see :class:`TagSeparation`).

    Args:
        tags: ``[B, K, D, H, W]`` tag maps.
        joints: ``[B, P, K, 2]`` long: flat index ``row * W + col`` of each joint in its map and a 0/1 labelled flag,
            as the AE codec encodes them (``targets["joints"]``).
    """
    if tags.dim() != 5 or joints.dim() != 4 or joints.shape[-1] != 2 or joints.shape[:1] != tags.shape[:1]:
        raise ValueError(f"expected tags [B, K, D, H, W] and joints [B, P, K, 2] of one batch, got "
                         f"{tuple(tags.shape)} and {tuple(joints.shape)}")
    width = tags.shape[-1]
    joint_tags, labelled, mean = person_tags(tags, joints)
    is_joint = labelled > 0
    present = is_joint.any(dim=2)  # [B, P]
    # Distance of every joint's tag to every person's mean tag of its image: [B, P, K, Q].
    dist = torch.linalg.vector_norm(joint_tags[:, :, :, None] - mean[:, None, None], dim=-1)
    people = joints.shape[1]
    same = torch.eye(people, dtype=torch.bool, device=tags.device)[None, :, None]
    own = dist.diagonal(dim1=1, dim2=3).permute(0, 2, 1)  # [B, P, K]
    other, nearest = torch.where(same | ~present[:, None, None], torch.inf, dist).min(dim=3)

    # Where the people stand, from their joints' pixels (numpy from here on: a few values per person).
    flat = joints[..., 0].cpu().numpy()
    pixel = np.stack([flat % width, flat // width], axis=-1).astype(np.float64)  # [B, P, K, 2]
    present_np = present.cpu().numpy()
    centre, size = geometry.person_centres(pixel, is_joint.cpu().numpy())  # [B, P, 2], [B, P]
    nearest_centre = np.take_along_axis(centre[:, :, None], nearest.cpu().numpy()[..., None], axis=1)  # [B, P, K, 2]
    gap = np.linalg.norm(nearest_centre - centre[:, :, None], axis=-1) / size[:, :, None]
    neighbour = np.broadcast_to(geometry.neighbour_gaps(centre, size, present_np)[:, :, None], gap.shape)

    counted = (is_joint & (present.sum(dim=1) >= 2)[:, None, None]).cpu().numpy()
    return TagSeparation(own.cpu().numpy()[counted], other.cpu().numpy()[counted], gap[counted], neighbour[counted])
