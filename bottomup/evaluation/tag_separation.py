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

    pixel = torch.stack([joints[..., 0] % width, torch.div(joints[..., 0], width, rounding_mode="floor")], -1)
    pixel = pixel.float()  # [B, P, K, 2]
    count = labelled.sum(dim=2, keepdim=True).clamp_min(1)
    centre = (pixel * labelled[..., None]).sum(dim=2) / count  # [B, P, 2]
    low = torch.where(is_joint[..., None], pixel, torch.inf).amin(dim=2)
    high = torch.where(is_joint[..., None], pixel, -torch.inf).amax(dim=2)
    size = (high - low).amax(dim=2).clamp_min(1)  # [B, P]
    nearest_centre = centre.gather(1, nearest.flatten(1)[..., None].expand(-1, -1, 2)).view(*nearest.shape, 2)
    gap = torch.linalg.vector_norm(nearest_centre - centre[:, :, None], dim=-1) / size[:, :, None]
    between = torch.cdist(centre, centre)  # [B, P, Q]
    neighbour = torch.where(same[:, :, 0] | ~present[:, None], torch.inf, between).amin(dim=2) / size
    neighbour = neighbour[:, :, None].expand_as(gap)

    counted = is_joint & (present.sum(dim=1) >= 2)[:, None, None]
    return TagSeparation(*(value[counted].cpu().numpy() for value in (own, other, gap, neighbour)))
