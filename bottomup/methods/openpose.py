"""OpenPose (part affinity fields): keypoint heatmaps + one 2-D unit-vector field per limb.

Targets (Cao et al.): a Gaussian per labelled joint (sub-pixel centre, people combined by maximum) and, for every limb
whose two joints are labelled, the unit vector from the first joint to the second on every pixel within
``limb_width`` map pixels of the segment, averaged where limbs of several people overlap. The limb graph is the
skeleton's PAF graph unless ``limbs`` says otherwise (for COCO the redundant 33-link graph).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from bottomup.decoders.paf import PAFDecoder
from bottomup.methods import targets
from bottomup.methods.base import Codec, GroupingMethod, Outputs, OutputSpec
from bottomup.methods.heads import StagedBranchHead
from bottomup.methods.losses import StagedLoss, field_l2, masked_mse
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton
from bottomup.trunks.base import FeatureInfo


class PAFCodec(Codec):
    """Encodes people as heatmaps + part affinity fields; decodes with :class:`~bottomup.decoders.PAFDecoder`.

    Args:
        skeleton: keypoint layout.
        stride: input pixels per map pixel.
        sigma: Gaussian sigma of the heatmaps, in map pixels.
        limbs: limb graph: pairs of keypoint indices, ``"drawing"`` (the skeleton's links) or ``"paf"``/``None``
            (the skeleton's PAF graph: for COCO the redundant 33 links).
        limb_width: half-width of a limb's field, in map pixels.
        decoder: options of :class:`~bottomup.decoders.PAFDecoder`.
    """

    def __init__(self, skeleton: Skeleton, stride: int = 4, sigma: float = 2.0,
                 limbs: str | Sequence[Sequence[int]] | None = None, limb_width: float = 1.0,
                 decoder: Mapping | None = None) -> None:
        super().__init__(skeleton, stride, sigma, decoder)
        self.limbs = limb_graph(skeleton, limbs)
        self.limb_width = float(limb_width)
        self.decoder = PAFDecoder(skeleton, limbs=self.limbs, **self.decoder_options)

    @property
    def outputs(self) -> dict[str, OutputSpec]:
        return {
            "heatmaps": OutputSpec(self.skeleton.num_keypoints, self.stride, "heatmap", "detection"),
            "pafs": OutputSpec(2 * len(self.limbs), self.stride, "field", "grouping"),
        }

    def encode(self, keypoints, input_size, mask=None) -> dict[str, Tensor]:
        outputs = self.ideal_outputs(keypoints, input_size)
        return {**outputs, "mask": targets.downsample_mask(mask, input_size, self.stride)}

    def ideal_outputs(self, keypoints, input_size) -> Outputs:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride)
        width, height = targets.map_size(input_size, self.stride)
        heatmaps, _ = targets.render_heatmaps(kpts, width, height, self.sigma)
        return {"heatmaps": heatmaps, "pafs": render_pafs(kpts, self.limbs, width, height, self.limb_width)}

    def decode_maps(self, outputs: Mapping[str, Tensor]) -> list[Poses]:
        return self.decoder(outputs["heatmaps"], outputs["pafs"])

    def flip_outputs(self, outputs: Mapping[str, Tensor]) -> Outputs:
        perm, sign = self._limb_flip()
        pafs = outputs["pafs"].flip(-1)
        b, _, h, w = pafs.shape
        fields = pafs.view(b, len(self.limbs), 2, h, w)[:, perm]
        sign_t = torch.as_tensor(sign, dtype=pafs.dtype, device=pafs.device)
        # Mirroring negates x; a limb that maps onto a reversed limb also flips direction.
        fields = fields * torch.stack([-sign_t, sign_t], dim=1)[None, :, :, None, None]
        return {"heatmaps": self.flip_channels(outputs["heatmaps"], "heatmap"), "pafs": fields.reshape(pafs.shape)}

    def _limb_flip(self) -> tuple[list[int], list[float]]:
        flip = self.skeleton.flip_index
        index = {limb: i for i, limb in enumerate(self.limbs)}
        perm, sign = [], []
        for a, b in self.limbs:
            mirrored = (flip[a], flip[b])
            if mirrored in index:
                perm.append(index[mirrored])
                sign.append(1.0)
            elif mirrored[::-1] in index:
                perm.append(index[mirrored[::-1]])
                sign.append(-1.0)
            else:
                raise ValueError(f"limb ({a}, {b}) has no mirror image {mirrored} in the limb graph, "
                                 f"so PAFs cannot be flip-tested")
        return perm, sign


GRAPH_NAMES = ("paf", "drawing")


def limb_graph(skeleton: Skeleton, limbs: str | Sequence[Sequence[int]] | None) -> tuple[tuple[int, int], ...]:
    """A limb graph: explicit pairs, ``"drawing"`` (the skeleton's links) or ``"paf"``/``None`` (its PAF graph)."""
    if limbs is None or limbs == "paf":
        return skeleton.pafs
    if limbs == "drawing":
        return skeleton.limbs
    if isinstance(limbs, str):
        raise ValueError(f"limbs must be pairs of keypoint indices or one of {GRAPH_NAMES}, got {limbs!r}")
    return tuple((int(a), int(b)) for a, b in limbs)


def render_pafs(keypoints: Tensor, limbs: Sequence[tuple[int, int]], width: int, height: int,
                limb_width: float) -> Tensor:
    """Part affinity fields ``[2L, H, W]`` for ``keypoints [N, K, 3]`` in map coordinates.

    Each labelled limb writes its unit vector on the pixels within ``limb_width`` of its segment; overlapping limbs
    of one type are averaged. Work is bounded by each limb's bounding box, not the whole map.
    """
    n_limbs = len(limbs)
    fields = torch.zeros(n_limbs * 2 * height * width)
    counts = torch.zeros(n_limbs * height * width)
    if keypoints.shape[0] == 0 or n_limbs == 0:
        return fields.view(2 * n_limbs, height, width)
    la = torch.tensor([a for a, _ in limbs])
    lb = torch.tensor([b for _, b in limbs])
    pa, pb = keypoints[:, la], keypoints[:, lb]
    labelled = (pa[..., 2] > 0) & (pb[..., 2] > 0)
    person, limb = labelled.nonzero(as_tuple=True)
    a, b = pa[person, limb, :2], pb[person, limb, :2]
    vec = b - a
    length = vec.norm(dim=1)
    usable = length > 1e-6
    a, b, vec, length, limb = a[usable], b[usable], vec[usable], length[usable], limb[usable]
    if limb.numel() == 0:
        return fields.view(2 * n_limbs, height, width)
    unit = vec / length[:, None]
    lo = (torch.minimum(a, b) - limb_width).floor().clamp_min(0)
    hi = torch.maximum(a, b) + limb_width
    hi = torch.stack([hi[:, 0].ceil().clamp_max(width - 1), hi[:, 1].ceil().clamp_max(height - 1)], dim=1)
    span = (hi - lo + 1).clamp_min(0)
    win_w, win_h = int(span[:, 0].max().item()), int(span[:, 1].max().item())
    if win_w <= 0 or win_h <= 0:
        return fields.view(2 * n_limbs, height, width)
    xs = lo[:, 0:1] + torch.arange(win_w, dtype=torch.float32)[None, :]
    ys = lo[:, 1:2] + torch.arange(win_h, dtype=torch.float32)[None, :]
    rx = xs[:, None, :] - a[:, 0, None, None]
    ry = ys[:, :, None] - a[:, 1, None, None]
    along = rx * unit[:, 0, None, None] + ry * unit[:, 1, None, None]
    across = (rx * unit[:, 1, None, None] - ry * unit[:, 0, None, None]).abs()
    on = ((along >= 0) & (along <= length[:, None, None]) & (across <= limb_width)
          & (xs[:, None, :] <= hi[:, 0, None, None]) & (ys[:, :, None] <= hi[:, 1, None, None]))
    inst, iy, ix = on.nonzero(as_tuple=True)
    pixel = ys[inst, iy].long() * width + xs[inst, ix].long()
    slot = limb[inst] * height * width + pixel
    counts.index_add_(0, slot, torch.ones_like(slot, dtype=torch.float32))
    x_slot = limb[inst] * 2 * height * width + pixel
    fields.index_add_(0, x_slot, unit[inst, 0])
    fields.index_add_(0, x_slot + height * width, unit[inst, 1])
    fields = fields.view(n_limbs, 2, height, width) / counts.view(n_limbs, 1, height, width).clamp_min(1.0)
    return fields.reshape(2 * n_limbs, height, width)


def limb_fragmentation(keypoints: np.ndarray, limbs: Sequence[tuple[int, int]]) -> float:
    """Fraction of people whose labelled joints fall apart into several pieces under ``limbs``.

    A person is split when no chain of limbs between labelled joints links all of them, so a PAF decoder that only
    follows these limbs cannot assemble the person whole. ``keypoints`` is ``[N, K, 3]``.
    """
    if len(keypoints) == 0:
        return math.nan
    split = 0
    for person in keypoints:
        labelled = set(np.flatnonzero(person[:, 2] > 0).tolist())
        if len(labelled) <= 1:
            continue
        parent = {j: j for j in labelled}

        def root(j: int) -> int:
            while parent[j] != j:
                parent[j] = parent[parent[j]]
                j = parent[j]
            return j

        for a, b in limbs:
            if a in labelled and b in labelled:
                parent[root(a)] = root(b)
        split += len({root(j) for j in labelled}) > 1
    return split / len(keypoints)


class PAFHead(StagedBranchHead):
    """OpenPose head: a heatmap branch and a PAF branch per stage, with refinement stages.

    Each branch is ``num_convs`` 3x3 conv-BN-ReLU layers of ``channels`` then a 1x1 conv (to K heatmaps, to 2L
    fields). Stage 1 reads the trunk's stride-4 features; every later stage reads ``concat(features, heatmaps, pafs)``
    of the stage before, as in Cao et al. Every stage is returned and supervised.

    The defaults (2 stages, 3 convs of 64 channels per branch) are far lighter than OpenPose's VGG head (5 refinement
    stages of 7x7 convs at 128 channels): the shared HRNet / Hourglass trunk already has a large receptive field, and
    the comparison is of grouping, not of head capacity. On HRNet-W32 at 512 the head adds about 7.8 GFLOPs to the
    trunk's 40.8 (``python -m bottomup.model_info method=openpose``).
    """

    def __init__(self, codec: Codec, feature_info: FeatureInfo, stages: int = 2, channels: int = 64,
                 num_convs: int = 3, kernel_size: int = 3) -> None:
        super().__init__(codec, feature_info, stages, channels, num_convs, kernel_size)


class PAFLoss(StagedLoss):
    """Masked heatmap MSE + masked PAF L2 (:func:`~bottomup.methods.losses.field_l2`), summed over all stages.

    Targets: ``heatmaps [B, K, H, W]``, ``pafs [B, 2L, H, W]``, ``mask [B, 1, H, W]``. Parts: ``heatmap``, ``paf``.

    Args:
        heatmap_weight, paf_weight: factors of the two terms.
        stage_weights: see :class:`~bottomup.methods.losses.StagedLoss`.
    """

    def __init__(self, codec: Codec, heatmap_weight: float = 1.0, paf_weight: float = 1.0,
                 stage_weights: Sequence[float] | None = None) -> None:
        super().__init__(codec, stage_weights)
        self.heatmap_weight = float(heatmap_weight)
        self.paf_weight = float(paf_weight)

    def parts(self, prediction: Outputs, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        mask = targets["mask"]
        return {"heatmap": self.heatmap_weight * masked_mse(prediction["heatmaps"], targets["heatmaps"], mask),
                "paf": self.paf_weight * field_l2(prediction["pafs"], targets["pafs"], mask)}


class OpenPose(GroupingMethod):
    """OpenPose (Cao et al., CVPR'17 / TPAMI'19): heatmaps + part affinity fields, greedy limb assembly."""

    name = "openpose"
    codec_class = PAFCodec
    head_class = PAFHead
    loss_class = PAFLoss
