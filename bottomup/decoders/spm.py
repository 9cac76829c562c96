"""SPM decoding (Nie et al., ICCV'19, "Single-Stage Multi-Person Pose Machines"): root peaks + displacements.

Every peak of the root (person centre) heatmap is a person; its joints are read from the displacement maps by
bilinear interpolation at the root, or, in the paper's hierarchical form, at the joint's parent (root -> torso ->
limbs), each displacement pointing from the parent to the child. Optional joint heatmaps score each keypoint and,
with ``snap``, also place it: a regressed joint moves to a nearby peak of its heatmap (as CenterNet's multi-person
decoder does, Zhou et al. 2019), so the displacements decide who a joint belongs to and the heatmaps where it is.
Everything is batched over images and people; only pose NMS loops over the people of an image.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bottomup.decoders import checks
from bottomup.decoders.base import PoseSelection
from bottomup.decoders.peaks import Peaks, find_peaks, sample, sample_per_channel
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton

# Joint heatmap peaks farther than this many snap sigmas from a regressed joint are never snapped to.
SNAP_CUTOFF = 3.0


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

    Keypoint scores are the joint heatmap values at the regressed positions; the person score is the root score
    times the mean keypoint score. Without heatmaps, keypoints and person both score the root score. With heatmaps
    and ``snap``, each regressed joint is replaced by the peak of its joint heatmap (NMS ``nms_kernel``, above
    ``snap_threshold``, the ``top_k`` strongest) with the largest score x Gaussian of distance, sigma ``snap`` times
    the person's size (the square root of the area of its regressed joints' box), and scored by that peak; people
    may share a peak.

    Args:
        skeleton: keypoint layout.
        parents: hierarchical mode: ``parents[k]`` is the joint whose position joint k's displacement starts from,
            -1 for the root. ``None``: every displacement starts at the root.
        root_threshold: minimum root heatmap value of a person.
        nms_kernel: max-pooling window of root NMS.
        refine: sub-pixel refinement of root and joint peaks.
        snap: sigma of the distance weighting between a regressed joint and the heatmap peaks that may replace
            it, as a fraction of the person's size; ``None`` keeps the regressed positions, as the paper does
            (and as happens whenever no heatmaps are passed).
        snap_threshold: weakest joint heatmap peak a joint may snap to.
        top_k: joint heatmap peaks considered per joint for snapping.
        **selection: :class:`~bottomup.decoders.base.PoseSelection` options.
    """

    def __init__(self, skeleton: Skeleton, parents: Sequence[int] | None = None, root_threshold: float = 0.1,
                 nms_kernel: int = 3, refine: str = "gaussian", snap: float | None = 0.5,
                 snap_threshold: float = 0.1, top_k: int = 30, **selection) -> None:
        super().__init__(skeleton, **selection)
        k = skeleton.num_keypoints
        if parents is not None and len(parents) != k:
            raise ValueError(f"parents has {len(parents)} entries for {k} keypoints")
        self.parents = None if parents is None else tuple(int(p) for p in parents)
        self.levels = hierarchy_levels(self.parents) if self.parents is not None else [list(range(k))]
        self.root_threshold = float(root_threshold)
        self.nms_kernel = int(nms_kernel)
        self.refine = refine
        if snap is not None and snap <= 0:
            raise ValueError(f"snap must be positive or None, got {snap}")
        self.snap = None if snap is None else float(snap)
        self.snap_threshold = float(snap_threshold)
        self.top_k = int(top_k)

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
        if b == 0:
            return []
        snapping = heatmaps is not None and self.snap is not None
        if snapping:
            # One peak search serves the roots and the joint heatmaps: on CPU each search has a fixed cost that
            # matters at these map sizes.
            peaks = find_peaks(torch.cat([root, heatmaps], dim=1), self.nms_kernel,
                               min(self.root_threshold, self.snap_threshold), max(self.max_people, self.top_k),
                               self.refine)
        else:
            peaks = find_peaks(root, self.nms_kernel, self.root_threshold, self.max_people, self.refine)
        roots = peaks.strongest(slice(0, 1), self.max_people, self.root_threshold)
        rx, ry, rscore, valid = roots.x[:, 0], roots.y[:, 0], roots.score[:, 0], roots.valid[:, 0]
        x, y = self._regress(disp, rx, ry)
        if heatmaps is not None:
            joint_scores = sample_per_channel(heatmaps, x, y).clamp(0.0, 1.0)
            if snapping:
                x, y, joint_scores = self._snap(peaks.strongest(slice(1, None), self.top_k, self.snap_threshold), x,
                                                y, joint_scores)
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

    def _snap(self, peaks: Peaks, x: Tensor, y: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Regressed joints ``x, y, scores [B, K, N]`` moved to the joint heatmap peak (of ``peaks [B, K, T]``) that
        supports them best.

        A peak's support is its score times a Gaussian of its distance to the regressed joint, with sigma ``snap``
        times the person's size: a strong peak a little farther away beats a faint one close by (noise, a
        neighbour's weak blob), and a person's own peak beats a neighbour's stronger one farther off. Peaks beyond
        :data:`SNAP_CUTOFF` sigmas are never taken; a joint with none in reach keeps its regressed position.
        """
        area = (x.amax(dim=1) - x.amin(dim=1)) * (y.amax(dim=1) - y.amin(dim=1))  # [B, N]
        sigma = self.snap * area.clamp_min(1.0).sqrt()
        dx = x[..., None] - peaks.x[:, :, None]  # [B, K, N, T]
        dy = y[..., None] - peaks.y[:, :, None]
        distance = torch.hypot(dx, dy) / sigma[:, None, :, None]
        support = peaks.score[:, :, None] * torch.exp(-0.5 * distance.square())
        support = support.masked_fill(~peaks.valid[:, :, None] | (distance > SNAP_CUTOFF), -1.0)
        best, which = support.max(dim=3)
        found = best >= 0
        x, y, scores = (torch.where(found, at_peak.gather(2, which), regressed)
                        for at_peak, regressed in ((peaks.x, x), (peaks.y, y), (peaks.score.clamp(0.0, 1.0), scores)))
        return x, y, scores
