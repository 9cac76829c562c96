"""SPM decoding (Nie et al., ICCV'19, "Single-Stage Multi-Person Pose Machines"): root peaks + displacements.

Every peak of the root (person centre) heatmap is a person; its joints are read from the displacement maps by
bilinear interpolation at the root, or, in the paper's hierarchical form, at the joint's parent (root -> torso ->
limbs), each displacement pointing from the parent to the child. Optional joint heatmaps score each keypoint.
Everything is batched over images and people; only pose NMS loops over the people of an image.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bottomup.decoders import checks
from bottomup.decoders.base import PoseSelection
from bottomup.decoders.peaks import find_peaks, sample, sample_per_channel
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton


def hierarchy_levels(parents: Sequence[int]) -> list[list[int]]:
    """Group joints by depth below the root (parent -1); raises on cycles or bad parent indices."""
    k = len(parents)
    depth: list[int | None] = [None] * k

    def resolve(j: int, trail: tuple[int, ...]) -> int:
        if depth[j] is not None:
            return depth[j]  # type: ignore[return-value]
        p = parents[j]
        if p == -1:
            depth[j] = 0
        elif not 0 <= p < k or p in trail:
            raise ValueError(f"parents must form a tree rooted at -1 over 0..{k - 1}; joint {j} has parent {p}")
        else:
            depth[j] = resolve(p, trail + (j,)) + 1
        return depth[j]  # type: ignore[return-value]

    for j in range(k):
        resolve(j, ())
    levels: list[list[int]] = [[] for _ in range(max(depth) + 1)]  # type: ignore[type-var]
    for j, dj in enumerate(depth):
        levels[dj].append(j)  # type: ignore[index]
    return levels


class SPMDecoder(PoseSelection):
    """Root NMS + displacement regression.

    Call with ``root_heatmap [B, 1, H, W]``, ``displacements [B, 2K, H, W]`` (per joint the x then y offset, in map
    pixels, from the root -- or from the joint's parent in hierarchical mode -- to the joint) and optionally
    ``heatmaps [B, K, H, W]``. Returns one :class:`Poses` per image, coordinates in the root heatmap's grid.

    Keypoint scores are the joint heatmap values at the regressed positions (the root score without heatmaps); the
    person score is the root score times the mean keypoint score.

    Args:
        skeleton: keypoint layout.
        parents: hierarchical mode: ``parents[k]`` is the joint whose position joint k's displacement starts from,
            -1 for the root. ``None``: every displacement starts at the root.
        root_threshold: minimum root heatmap value of a person.
        nms_kernel: max-pooling window of root NMS.
        refine: sub-pixel refinement of root peaks.
        **selection: :class:`~bottomup.decoders.base.PoseSelection` options.
    """

    def __init__(self, skeleton: Skeleton, parents: Sequence[int] | None = None, root_threshold: float = 0.1,
                 nms_kernel: int = 3, refine: str = "gaussian", **selection) -> None:
        super().__init__(skeleton, **selection)
        k = skeleton.num_keypoints
        if parents is not None and len(parents) != k:
            raise ValueError(f"parents has {len(parents)} entries for {k} keypoints")
        self.parents = None if parents is None else tuple(int(p) for p in parents)
        self.levels = hierarchy_levels(self.parents) if self.parents is not None else [list(range(k))]
        self.root_threshold = float(root_threshold)
        self.nms_kernel = int(nms_kernel)
        self.refine = refine

    def __call__(self, root_heatmap: Tensor, displacements: Tensor, heatmaps: Tensor | None = None) -> list[Poses]:
        k = self.skeleton.num_keypoints
        checks.check_rank("root_heatmap", root_heatmap, (4,), "[B, 1, H, W]")
        checks.check_rank("displacements", displacements, (4,), "[B, 2K, H, W]")
        checks.check_channels("root_heatmap", root_heatmap, 1, "one root (person centre) map")
        checks.check_channels("displacements", displacements, 2 * k,
                              f"x and y per keypoint of skeleton {self.skeleton.name!r} ({k} keypoints)")
        checks.check_same_batch_and_size("root_heatmap", root_heatmap, "displacements", displacements)
        root = checks.as_float(root_heatmap)
        disp = checks.as_float(displacements)
        if heatmaps is not None:
            checks.check_rank("heatmaps", heatmaps, (4,), "[B, K, H, W]")
            checks.check_channels("heatmaps", heatmaps, k, f"skeleton {self.skeleton.name!r} has {k} keypoints")
            checks.check_same_batch_and_size("root_heatmap", root_heatmap, "heatmaps", heatmaps)
            heatmaps = checks.as_float(heatmaps)
        b, _, h, w = root.shape
        peaks = find_peaks(root, self.nms_kernel, self.root_threshold, self.max_people, self.refine)
        rx, ry, rscore, valid = peaks.x[:, 0], peaks.y[:, 0], peaks.score[:, 0], peaks.valid[:, 0]
        x, y = self._regress(disp, rx, ry)
        if heatmaps is not None:
            joint_scores = sample_per_channel(heatmaps, x, y).clamp(0.0, 1.0)
            person_scores = rscore * joint_scores.mean(dim=1)
        else:
            joint_scores = rscore[:, None, :].expand_as(x)
            person_scores = rscore
        kpts = torch.stack([x, y, joint_scores], dim=-1).permute(0, 2, 1, 3)
        grouped = torch.full_like(rscore, float(k))
        return [self.select(kpts[i][valid[i]], person_scores[i][valid[i]], grouped[i][valid[i]], w, h)
                for i in range(b)]

    def _regress(self, disp: Tensor, rx: Tensor, ry: Tensor) -> tuple[Tensor, Tensor]:
        """Joint positions ``x, y [B, K, N]`` from roots ``rx, ry [B, N]``."""
        b, _, h, w = disp.shape
        k = self.skeleton.num_keypoints
        n = rx.shape[1]
        if self.parents is None:
            offsets = sample(disp, rx, ry).view(b, k, 2, n)
            return rx[:, None, :] + offsets[:, :, 0], ry[:, None, :] + offsets[:, :, 1]
        x = torch.zeros(b, k, n, device=disp.device)
        y = torch.zeros(b, k, n, device=disp.device)
        disp_xy = disp.view(b, k, 2, h, w)
        for level in self.levels:
            joints = torch.as_tensor(level, device=disp.device)
            parents = [self.parents[j] for j in level]
            px = torch.stack([rx if p < 0 else x[:, p] for p in parents], dim=1)
            py = torch.stack([ry if p < 0 else y[:, p] for p in parents], dim=1)
            maps = disp_xy[:, joints].reshape(b, 2 * len(level), h, w)
            offsets = sample_per_channel(maps, px.repeat_interleave(2, dim=1), py.repeat_interleave(2, dim=1))
            offsets = offsets.view(b, len(level), 2, n)
            x[:, joints] = px + offsets[:, :, 0]
            y[:, joints] = py + offsets[:, :, 1]
        return x, y
