"""Associative Embedding decoding (Newell et al., NIPS'17): heatmap peaks grouped by their tags.

Per image: the top-k peaks of every joint (max-pool NMS, sub-pixel refinement), then joint by joint a Hungarian
matching of the new detections to the people found so far, on the distance between a detection's tag and the
person's mean tag (within ``tag_threshold``), ties broken by heatmap value; unmatched detections start new people.
Joints a person still lacks are filled from the weaker peaks whose tag is nearest the person's mean tag.

The dense work (NMS, top-k, tag reading) runs batched in torch on the maps' device; the small per-joint assignment
problems and the filling run on the peak lists on the CPU (SciPy's Hungarian solver, numpy).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from bottomup.decoders import checks
from bottomup.decoders.base import PoseSelection
from bottomup.decoders.matching import match_max
from bottomup.decoders.peaks import HeatmapReader, find_peaks, sample_per_channel
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton

class AEDecoder(PoseSelection):
    """Groups heatmap peaks into people by associative-embedding tags.

    Call with ``heatmaps [B, K, H, W]`` and ``tags [B, K, H, W]`` (one tag per joint) or ``[B, K, D, H, W]``
    (D-dimensional tags, e.g. D = 2 after flip test). Returns one :class:`Poses` per image, coordinates in the
    heatmap grid.

    Args:
        skeleton: keypoint layout; ``K`` must equal its number of keypoints.
        detection_threshold: minimum heatmap value of a peak.
        tag_threshold: maximum tag distance between a detection and a person's mean tag for them to be matched.
        top_k: peaks kept per joint.
        nms_kernel: max-pooling window of peak NMS.
        refine: sub-pixel refinement of peaks (``gaussian``, ``quarter`` or ``none``).
        use_detection_value: rank matches by rounded tag distance first and heatmap value second (as HigherHRNet);
            if False, by tag distance only.
        fill_missing: give each person the joints it lacks, from the peaks whose tag is nearest its mean tag
            (HigherHRNet's ``refine``, searched over peaks instead of pixels). Filled joints keep their heatmap value
            as keypoint score but do not count in the person score.
        fill_threshold: weakest peak considered for filling.
        fill_candidates: peaks per joint considered for filling.
        joint_order: order in which joints are grouped (default: skeleton order).
        **selection: :class:`~bottomup.decoders.base.PoseSelection` options (max_people, min_keypoints, min_score,
            pose_nms_threshold).
    """

    def __init__(self, skeleton: Skeleton, detection_threshold: float = 0.1, tag_threshold: float = 1.0,
                 top_k: int = 30, nms_kernel: int = 5, refine: str = "gaussian", use_detection_value: bool = True,
                 fill_missing: bool = True, fill_threshold: float = 0.01, fill_candidates: int = 30,
                 joint_order: Sequence[int] | None = None, **selection) -> None:
        super().__init__(skeleton, **selection)
        self.detection_threshold = float(detection_threshold)
        self.tag_threshold = float(tag_threshold)
        self.top_k = int(top_k)
        self.nms_kernel = int(nms_kernel)
        self.refine = refine
        self.use_detection_value = bool(use_detection_value)
        self.fill_missing = bool(fill_missing)
        self.fill_threshold = float(fill_threshold)
        self.fill_candidates = int(fill_candidates)
        k = skeleton.num_keypoints
        self.joint_order = tuple(range(k)) if joint_order is None else tuple(int(j) for j in joint_order)
        if sorted(self.joint_order) != list(range(k)):
            raise ValueError(f"joint_order must be a permutation of 0..{k - 1}, got {self.joint_order}")

    def __call__(self, heatmaps: Tensor, tags: Tensor) -> list[Poses]:
        heatmaps, tags = self._check(heatmaps, tags)
        return self.group(heatmaps, tags)

    def _check(self, heatmaps: Tensor, tags: Tensor) -> tuple[Tensor, Tensor]:
        k = self.skeleton.num_keypoints
        checks.check_rank("heatmaps", heatmaps, (4,), "[B, K, H, W]")
        checks.check_rank("tags", tags, (4, 5), "[B, K, H, W] or [B, K, D, H, W]")
        checks.check_channels("heatmaps", heatmaps, k, f"skeleton {self.skeleton.name!r} has {k} keypoints")
        checks.check_channels("tags", tags, k, f"one tag map per keypoint of skeleton {self.skeleton.name!r}")
        checks.check_same_batch_and_size("heatmaps", heatmaps, "tags", tags)
        if tags.dim() == 4:
            tags = tags.unsqueeze(2)
        return checks.as_float(heatmaps), checks.as_float(tags)

    def group(self, heatmaps: Tensor | HeatmapReader, tags: Tensor) -> list[Poses]:
        """Grouping on already checked maps: ``heatmaps [B, K, H, W]`` (or a reader of them), ``tags [B, K, D, h, w]``.

        The tag maps may be coarser than the heatmaps by an integer factor (HigherHRNet); they are read bilinearly
        at each peak pixel's centre.
        """
        b, k, h, w = heatmaps.shape
        if b == 0:
            return []
        d = tags.shape[2]
        # One peak search serves both grouping (strong peaks) and filling (weaker peaks down to fill_threshold).
        threshold = min(self.detection_threshold, self.fill_threshold) if self.fill_missing else self.detection_threshold
        slots = max(self.top_k, self.fill_candidates) if self.fill_missing else self.top_k
        peaks = find_peaks(heatmaps, self.nms_kernel, threshold, slots, self.refine)
        n = peaks.index.shape[-1]
        scale = tags.shape[-1] / w
        col = ((peaks.index % w).float() + 0.5) * scale - 0.5
        row = (torch.div(peaks.index, w, rounding_mode="floor").float() + 0.5) * scale - 0.5
        peak_tags = sample_per_channel(tags.flatten(1, 2), col.repeat_interleave(d, dim=1),
                                       row.repeat_interleave(d, dim=1)).view(b, k, d, n).permute(0, 1, 3, 2)
        # One device->host transfer for everything the sequential assignment needs.
        packed = torch.cat([peaks.x[..., None], peaks.y[..., None], peaks.score[..., None],
                            peaks.valid[..., None].float(), peak_tags], dim=-1).cpu().numpy()
        rank = np.arange(n)[None, :]
        results = []
        for i in range(b):
            x, y, score, valid, tag = (packed[i, ..., 0], packed[i, ..., 1], packed[i, ..., 2],
                                       packed[i, ..., 3] > 0, packed[i, ..., 4:])
            detected = valid & (score > self.detection_threshold) & (rank < self.top_k)
            joint_of, mean_tags = self._assign(score, detected, tag)
            present = joint_of >= 0
            slot = np.where(present, joint_of, 0)
            joints = np.arange(k)[None, :]
            kpts = np.stack([x[joints, slot], y[joints, slot], score[joints, slot]], axis=-1) * present[..., None]
            person_scores = kpts[..., 2].mean(axis=1)
            if self.fill_missing:
                fillable = valid & (score > self.fill_threshold) & (rank < self.fill_candidates)
                self._fill(kpts, ~present, mean_tags, x, y, score, fillable, tag)
            device = heatmaps.device
            results.append(self.select(torch.as_tensor(kpts, dtype=torch.float32, device=device),
                                       torch.as_tensor(person_scores, dtype=torch.float32, device=device),
                                       torch.as_tensor(present.sum(1), device=device), w, h))
        return results

    def _assign(self, score: np.ndarray, valid: np.ndarray, tag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint-by-joint matching. Returns ``joint_of [P, K]`` (peak slot or -1) and mean tags ``[P, D]``."""
        k, _, d = tag.shape
        capacity = int(valid.sum())
        joint_of = np.full((capacity, k), -1, dtype=np.int64)
        tag_sum = np.zeros((capacity, d))
        count = np.zeros(capacity)
        people = 0
        for j in self.joint_order:
            det = np.flatnonzero(valid[j])
            if det.size == 0:
                continue
            det_tags = tag[j, det]
            if people:
                mean = tag_sum[:people] / count[:people, None]
                dist = np.sqrt(((det_tags[:, None, :] - mean[None, :, :]) ** 2).sum(-1))
                if self.use_detection_value:
                    cost = np.round(dist) * 100.0 - score[j, det][:, None]
                else:
                    cost = dist
                rows, cols = match_max(-cost, allowed=dist < self.tag_threshold)
                joint_of[cols, j] = det[rows]
                tag_sum[cols] += det_tags[rows]
                count[cols] += 1
                unmatched = np.ones(det.size, dtype=bool)
                unmatched[rows] = False
                det, det_tags = det[unmatched], det_tags[unmatched]
            m = det.size
            joint_of[people:people + m, j] = det
            tag_sum[people:people + m] = det_tags
            count[people:people + m] = 1
            people += m
        return joint_of[:people], tag_sum[:people] / np.maximum(count[:people, None], 1)

    @staticmethod
    def _fill(kpts: np.ndarray, missing: np.ndarray, mean_tags: np.ndarray, x: np.ndarray, y: np.ndarray,
              score: np.ndarray, valid: np.ndarray, tag: np.ndarray) -> None:
        """Fill ``kpts [P, K, 3]`` in place where ``missing [P, K]`` from the candidate peaks ``[K, N]``.

        For person p and joint k, among the candidates near the person, the one maximising
        ``heat - round(|tag - mean_tag_p|)`` (HigherHRNet's rule: tag agreement first, heat second). Searching the
        peaks rather than every pixel costs a few hundred
        operations instead of a pass over the maps per missing joint; a filled joint can only raise OKS, since an
        unplaced one scores nothing.
        """
        person, joint = np.nonzero(missing)
        if person.size == 0:
            return
        # Only peaks near the person qualify: its grouped joints' box, grown by its longer side (at least 2 px).
        placed = ~missing
        big = np.where(placed[..., None], kpts[..., :2], np.nan)
        lo, hi = np.nanmin(big, axis=1), np.nanmax(big, axis=1)
        margin = np.maximum((hi - lo).max(axis=1), 2.0)[:, None]
        lo, hi = lo - margin, hi + margin
        near = ((x[joint] >= lo[person, None, 0]) & (x[joint] <= hi[person, None, 0])
                & (y[joint] >= lo[person, None, 1]) & (y[joint] <= hi[person, None, 1]))
        dist = np.sqrt(((tag[joint] - mean_tags[person][:, None, :]) ** 2).sum(-1))
        gain = np.where(valid[joint] & near, score[joint] - np.round(dist), -np.inf)
        best = gain.argmax(axis=1)
        ok = np.isfinite(gain[np.arange(len(best)), best])
        person, joint, best = person[ok], joint[ok], best[ok]
        kpts[person, joint] = np.stack([x[joint, best], y[joint, best], score[joint, best]], axis=-1)
