"""SPM (Single-stage multi-Person pose Machines): a root heatmap + dense displacements from the root to every joint.

Targets (Nie et al., ICCV'19): each person's root is the mean of its labelled joints; a Gaussian marks it on the
root heatmap, and on the pixels within ``radius`` of it (owned by the nearest root where people overlap) every
displacement channel holds the offset from the pixel to the joint. In the paper's hierarchical form
(``hierarchical=True``) joint ``k``'s field sits around its parent joint instead (root -> torso -> limbs), so
errors stay short-range; parents come from :func:`derive_hierarchy`. Optional joint heatmaps score the keypoints.
"""

from __future__ import annotations

from collections import deque
from typing import Mapping, Sequence

import torch
from torch import Tensor

from bottomup.decoders.spm import SPMDecoder
from bottomup.methods import targets
from bottomup.methods.base import Codec, GroupingMethod, Outputs, OutputSpec
from bottomup.methods.heads import StagedBranchHead
from bottomup.methods.losses import StagedLoss, masked_mse, weighted_smooth_l1
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton


def derive_hierarchy(skeleton: Skeleton) -> tuple[int, ...]:
    """Parent of every joint for hierarchical SPM, from the skeleton's drawing limbs.

    The joints with the most limbs (for COCO the shoulders, for CrowdPose neck, shoulders and hips) hang from the
    root; every other joint hangs from its neighbour found first by a breadth-first search from them, which gives
    root -> torso -> limbs -> extremities. A joint and its mirror image are attached together, to mirrored parents,
    whenever the mirrored limb exists; joints no limb reaches hang from the root, and a joint that is its own mirror
    image hangs from its nearest such ancestor. So for a skeleton whose limbs mirror onto themselves the tree does
    too, which the flip test needs.
    """
    k = skeleton.num_keypoints
    flip = skeleton.flip_index
    neighbours: list[list[int]] = [[] for _ in range(k)]
    for a, b in skeleton.limbs:
        neighbours[a].append(b)
        neighbours[b].append(a)
    top = max((len(n) for n in neighbours), default=0)
    parents = [-2] * k
    queue = deque(j for j in range(k) if len(neighbours[j]) == top)
    for j in queue:
        parents[j] = -1
    while queue:
        j = queue.popleft()
        for child in neighbours[j]:
            if parents[child] != -2:
                continue
            parents[child] = j
            queue.append(child)
            # Otherwise the search could reach the mirror image first from the other side's joint.
            mirror = flip[child]
            if parents[mirror] == -2 and parents[flip[j]] != -2 and flip[j] in neighbours[mirror]:
                parents[mirror] = flip[j]
                queue.append(mirror)
    parents = [-1 if p == -2 else p for p in parents]
    # A joint that is its own mirror image (the nose) cannot hang from a sided joint (an eye) in a mirror tree, so it
    # moves up to its nearest unsided ancestor, or the root.
    for j in range(k):
        if flip[j] == j:
            p = parents[j]
            while p >= 0 and flip[p] != p:
                p = parents[p]
            parents[j] = p
    return tuple(parents)


class SPMCodec(Codec):
    """Encodes people as root heatmap + displacements (+ joint heatmaps); decodes with
    :class:`~bottomup.decoders.SPMDecoder`.

    Args:
        skeleton: keypoint layout.
        stride: input pixels per map pixel.
        sigma: Gaussian sigma of the joint heatmaps, in map pixels.
        root_sigma: Gaussian sigma of the root heatmap (default ``sigma``).
        radius: displacements are dense within this many map pixels of each root (or parent joint).
        hierarchical: displacements from each joint's parent instead of the root.
        with_heatmaps: also predict joint heatmaps, used to score keypoints (and to place them, with the decoder's
            ``snap``).
        decoder: options of :class:`~bottomup.decoders.SPMDecoder`.
    """

    def __init__(self, skeleton: Skeleton, stride: int = 4, sigma: float = 2.0, root_sigma: float | None = None,
                 radius: float = 4.0, hierarchical: bool = False, with_heatmaps: bool = True,
                 decoder: Mapping | None = None) -> None:
        super().__init__(skeleton, stride, sigma, decoder)
        self.root_sigma = self.sigma if root_sigma is None else float(root_sigma)
        self.radius = float(radius)
        self.with_heatmaps = bool(with_heatmaps)
        self.parents = derive_hierarchy(skeleton) if hierarchical else None
        self.decoder = SPMDecoder(skeleton, parents=self.parents, **self.decoder_options)

    @property
    def outputs(self) -> dict[str, OutputSpec]:
        k = self.skeleton.num_keypoints
        specs = {
            "root": OutputSpec(1, self.stride, "heatmap", "grouping"),
            "displacements": OutputSpec(2 * k, self.stride, "displacement", "grouping"),
        }
        if self.with_heatmaps:
            specs["heatmaps"] = OutputSpec(k, self.stride, "heatmap", "detection")
        return specs

    def encode(self, keypoints, input_size, mask=None) -> dict[str, Tensor]:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride)
        width, height = targets.map_size(input_size, self.stride)
        encoded = self._render(kpts, width, height)
        encoded["mask"] = targets.downsample_mask(mask, input_size, self.stride)
        return encoded

    def ideal_outputs(self, keypoints, input_size) -> Outputs:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride)
        width, height = targets.map_size(input_size, self.stride)
        rendered = self._render(kpts, width, height)
        return {name: rendered[name] for name in self.outputs}

    def _render(self, kpts: Tensor, width: int, height: int) -> dict[str, Tensor]:
        labelled = kpts[..., 2] > 0
        people = kpts[labelled.any(dim=1)]
        labelled = people[..., 2] > 0
        count = labelled.sum(dim=1, keepdim=True).clamp_min(1)
        root = (people[..., :2] * labelled[..., None]).sum(dim=1) / count
        root_kpts = torch.cat([root, torch.ones(len(root), 1)], dim=1)[:, None, :]
        # A person whose root falls outside the map can never be decoded: no targets for it.
        on_map = targets.inside(root_kpts, width, height)[:, 0]
        people, root, root_kpts = people[on_map], root[on_map], root_kpts[on_map]
        root_map, _ = targets.render_heatmaps(root_kpts, width, height, self.root_sigma)
        anchors = self._anchors(people, root)
        disp, weight = self._displacements(people, anchors, width, height)
        rendered = {"root": root_map, "displacements": disp, "displacement_weight": weight}
        if self.with_heatmaps:
            rendered["heatmaps"] = targets.render_heatmaps(kpts, width, height, self.sigma)[0]
        return rendered

    def _anchors(self, people: Tensor, root: Tensor) -> Tensor:
        """``[N, K, 2]``: where each joint's displacement field is centred (the root, or the joint's parent).

        A parent that is not labelled stands at its own anchor, so the decoder, which reads each joint at its
        parent's decoded position, finds the child's field exactly there.
        """
        n, k, _ = people.shape
        if self.parents is None:
            return root[:, None, :].expand(n, k, 2)
        position = torch.zeros(n, k, 2)
        anchors = torch.zeros(n, k, 2)
        for level in self.decoder.levels:
            for j in level:
                p = self.parents[j]
                anchors[:, j] = root if p < 0 else position[:, p]
                labelled = people[:, j, 2:3] > 0
                position[:, j] = torch.where(labelled, people[:, j, :2], anchors[:, j])
        return anchors

    def _displacements(self, people: Tensor, anchors: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
        """Displacements ``[2K, H, W]`` and loss weights ``[K, H, W]``.

        A pixel within ``radius`` of a person's anchor for joint k belongs to the nearest such anchor; there the
        target is the offset to the joint (to the anchor for unlabelled joints, weight 0). Weights of labelled
        joints are ``1 / scale`` (scale: the square root of the person's keypoint-box area, at least 1 pixel) so large
        people do not dominate the loss.
        """
        k = self.skeleton.num_keypoints
        disp = torch.zeros(k, 2, height, width)
        weight = torch.zeros(k, height, width)
        if len(people) == 0:
            return disp.view(2 * k, height, width), weight
        xs = torch.arange(width, dtype=torch.float32)
        ys = torch.arange(height, dtype=torch.float32)
        dx = xs[None, None, None, :] - anchors[..., 0, None, None]
        dy = ys[None, None, :, None] - anchors[..., 1, None, None]
        dist2 = dx**2 + dy**2
        dist2 = torch.where(dist2 <= self.radius**2, dist2, torch.full_like(dist2, float("inf")))
        nearest, owner = dist2.min(dim=0)
        owned = torch.isfinite(nearest)
        labelled = people[..., 2] > 0
        target = torch.where(labelled[..., None], people[..., :2], anchors)
        joint = torch.arange(k)[:, None, None].expand_as(owner)
        tx = target[owner, joint, 0] - xs[None, None, :]
        ty = target[owner, joint, 1] - ys[None, :, None]
        disp[:, 0] = torch.where(owned, tx, torch.zeros_like(tx))
        disp[:, 1] = torch.where(owned, ty, torch.zeros_like(ty))
        present = people[..., :2].where(labelled[..., None], torch.full_like(people[..., :2], float("nan")))
        extent = (present.nan_to_num(-1e9).amax(1) - present.nan_to_num(1e9).amin(1)).clamp_min(0)
        scale = (extent[:, 0] * extent[:, 1]).sqrt().clamp_min(1.0)
        weight[:] = torch.where(owned & labelled[owner, joint], 1.0 / scale[owner], torch.zeros_like(tx))
        return disp.view(2 * k, height, width), weight

    def decode_maps(self, outputs: Mapping[str, Tensor]) -> list[Poses]:
        return self.decoder(outputs["root"], outputs["displacements"],
                            outputs.get("heatmaps") if self.with_heatmaps else None)

    def flip_outputs(self, outputs: Mapping[str, Tensor]) -> Outputs:
        return {name: self.flip_channels(outputs[name], spec.kind) for name, spec in self.outputs.items()}


class SPMHead(StagedBranchHead):
    """SPM head: a root branch, a displacement branch and (with the codec's ``with_heatmaps``) a heatmap branch.

    Each branch is its own tower of ``num_convs`` 3x3 conv-BN-ReLU layers of ``channels`` on the trunk's stride-4
    features, then a 1x1 conv (to 1 root map, 2K displacements, K heatmaps). Separate towers because the outputs
    differ in kind: a regression in map pixels next to [0, 1] scores. ``stages > 1`` adds OpenPose-style refinement
    stages (each sees the features and the previous stage's outputs); the default is SPM's single stage.
    """


class SPMLoss(StagedLoss):
    """Root heatmap MSE + displacement smooth-L1 (+ joint heatmap MSE), summed over predictions.

    Targets: ``root [B, 1, H, W]``, ``displacements [B, 2K, H, W]``, ``displacement_weight [B, K, H, W]``,
    ``heatmaps [B, K, H, W]`` (with heatmaps), ``mask [B, 1, H, W]``. The displacement term is
    :func:`~bottomup.methods.losses.weighted_smooth_l1` (weights ``1 / person scale``, masked). Parts: ``root``,
    ``displacement``, and ``heatmap`` when the codec predicts heatmaps.

    Args:
        root_weight, displacement_weight, heatmap_weight: factors of the terms (displacement 0.03 as DEKR's offset
            loss, whose weights are the same ``1 / sqrt(area)``).
        beta: smooth-L1 transition point in map pixels (DEKR: 1/9).
        stage_weights: see :class:`~bottomup.methods.losses.StagedLoss`.
    """

    def __init__(self, codec: Codec, root_weight: float = 1.0, displacement_weight: float = 0.03,
                 heatmap_weight: float = 1.0, beta: float = 1.0 / 9.0,
                 stage_weights: Sequence[float] | None = None) -> None:
        super().__init__(codec, stage_weights)
        self.root_weight = float(root_weight)
        self.displacement_weight = float(displacement_weight)
        self.heatmap_weight = float(heatmap_weight)
        self.beta = float(beta)

    def parts(self, prediction: Outputs, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        mask = targets["mask"]
        parts = {
            "root": self.root_weight * masked_mse(prediction["root"], targets["root"], mask),
            "displacement": self.displacement_weight * weighted_smooth_l1(
                prediction["displacements"], targets["displacements"], targets["displacement_weight"], mask,
                self.beta),
        }
        if "heatmaps" in self.codec.outputs:
            parts["heatmap"] = self.heatmap_weight * masked_mse(prediction["heatmaps"], targets["heatmaps"], mask)
        return parts


class SPM(GroupingMethod):
    """SPM (Nie et al., ICCV'19): a root heatmap and dense root-to-joint displacements, no grouping search."""

    name = "spm"
    codec_class = SPMCodec
    head_class = SPMHead
    loss_class = SPMLoss
