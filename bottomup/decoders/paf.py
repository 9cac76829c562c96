"""Part-affinity-field decoding (Cao et al., CVPR'17 / TPAMI'19): peaks linked by line integrals over limb fields.

1. Candidates: heatmap peaks (max-pool NMS, top-k, sub-pixel refinement), batched over images and joints.
2. Limb scores: for every limb and every pair of candidates of its two joints, the field is sampled bilinearly at
   ``samples`` points along the segment and projected on its direction; a pair is plausible when enough samples agree
   (``min_agreement`` above ``paf_threshold``) and the mean, with OpenPose's prior against very long limbs, is
   positive. The pairs of all limbs of all images are scored as one list in one batched computation.
3. Per limb, a Hungarian matching keeps at most one partner per candidate.
4. Assembly: all matched connections, strongest first, merge the groups they join unless the two groups already
   hold different candidates for one joint. With a redundant limb graph this merges the fragments that a missing
   joint would otherwise leave (a person is one group as long as some chain of limbs links its joints).
5. Sharing: a person still lacking a joint takes a peak held by someone else if a limb field links it there (two
   people's joints closer than the NMS window make one peak).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from bottomup.decoders import checks
from bottomup.decoders.base import PoseSelection
from bottomup.decoders.matching import match_max
from bottomup.decoders.peaks import find_peaks, flat_true, sample_planes
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton

PERSON_SCORES = ("joints", "joints_and_limbs")


class PAFDecoder(PoseSelection):
    """Groups heatmap peaks into people along part affinity fields.

    Call with ``heatmaps [B, K, H, W]`` and ``pafs [B, 2L, H, W]``, the field channels ordered limb by limb as
    (x, y) in the order of ``limbs``. Returns one :class:`Poses` per image, coordinates in the heatmap grid.

    Args:
        skeleton: keypoint layout.
        limbs: the limb graph of the fields as pairs of keypoint indices (default ``skeleton.pafs``: for COCO the
            redundant 33-link graph).
        detection_threshold: minimum heatmap value of a candidate.
        top_k: candidates kept per joint.
        nms_kernel: max-pooling window of peak NMS.
        refine: sub-pixel refinement of peaks.
        samples: points sampled along each candidate limb for the line integral.
        paf_threshold: a sample agrees when its projected field exceeds this.
        min_agreement: fraction of samples that must agree for a pair to be a candidate connection.
        person_score: ``joints``: the keypoint scores summed and divided by K, so people with more, surer joints rank
            higher;
            ``joints_and_limbs``: that times the mean line-integral score of the person's connections, so people
            assembled from weak limb evidence rank below well-supported ones (+0.007 AP on real tf-pose outputs, no
            change on ideal maps; ``experiments/real_maps.py``).
        share_joints: give a person a joint it lacks from a peak another person holds, when one of its own joints
            has a plausible limb to that peak (two people's joints merged into one peak). Shared joints keep their
            heatmap score but do not count in the person score.
        **selection: :class:`~bottomup.decoders.base.PoseSelection` options.
    """

    def __init__(self, skeleton: Skeleton, limbs: Sequence[Sequence[int]] | None = None,
                 detection_threshold: float = 0.1, top_k: int = 30, nms_kernel: int = 3, refine: str = "gaussian",
                 samples: int = 10, paf_threshold: float = 0.05, min_agreement: float = 0.8,
                 person_score: str = "joints_and_limbs", share_joints: bool = True, **selection) -> None:
        super().__init__(skeleton, **selection)
        limbs = skeleton.pafs if limbs is None else tuple((int(a), int(b)) for a, b in limbs)
        k = skeleton.num_keypoints
        for a, b in limbs:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise ValueError(f"limb ({a}, {b}) is not a pair of distinct keypoints of skeleton "
                                 f"{skeleton.name!r} (0..{k - 1})")
        if not limbs:
            raise ValueError("PAFDecoder needs at least one limb")
        if person_score not in PERSON_SCORES:
            raise ValueError(f"person_score must be one of {PERSON_SCORES}, got {person_score!r}")
        if samples < 2:
            raise ValueError(f"samples must be >= 2, got {samples}")
        self.limbs = tuple(limbs)
        self.detection_threshold = float(detection_threshold)
        self.top_k = int(top_k)
        self.nms_kernel = int(nms_kernel)
        self.refine = refine
        self.samples = int(samples)
        self.paf_threshold = float(paf_threshold)
        self.min_agreement = float(min_agreement)
        self.person_score = person_score
        self.share_joints = bool(share_joints)
        self._limb_a = torch.tensor([a for a, _ in self.limbs])
        self._limb_b = torch.tensor([b for _, b in self.limbs])
        self._share_have = np.array([j for limb in self.limbs for j in limb])
        self._share_lack = np.array([j for a, b in self.limbs for j in (b, a)])
        self._share_ends = self._share_lack[:, None] == np.arange(k)[None, :]  # [2L, K]

    def __call__(self, heatmaps: Tensor, pafs: Tensor) -> list[Poses]:
        k, n_limbs = self.skeleton.num_keypoints, len(self.limbs)
        checks.check_rank("heatmaps", heatmaps, (4,), "[B, K, H, W]")
        checks.check_rank("pafs", pafs, (4,), "[B, 2L, H, W]")
        checks.check_channels("heatmaps", heatmaps, k, f"skeleton {self.skeleton.name!r} has {k} keypoints")
        checks.check_channels("pafs", pafs, 2 * n_limbs, f"x and y per limb of the {n_limbs}-limb graph")
        checks.check_same_batch_and_size("heatmaps", heatmaps, "pafs", pafs)
        heatmaps, pafs = checks.as_float(heatmaps), checks.as_float(pafs)
        b, _, h, w = heatmaps.shape
        if b == 0:
            return []
        peaks = find_peaks(heatmaps, self.nms_kernel, self.detection_threshold, self.top_k, self.refine)
        n = max(1, int(peaks.valid.sum(-1).max()))
        x, y, score, valid = (t[..., :n] for t in (peaks.x, peaks.y, peaks.score, peaks.valid))
        limb_scores = self._score_limbs(pafs, x, y, valid).cpu().numpy()
        packed = torch.cat([x, y, score, valid.float()], dim=-1).cpu().numpy()
        results = []
        for i in range(b):
            px, py, ps, pv = (packed[i, :, j * n:(j + 1) * n] for j in range(4))
            connections = self._connect(limb_scores[i])
            slots, limb_mean = self._assemble(connections, pv > 0)
            shared = self._share(slots, limb_scores[i]) if self.share_joints else np.full_like(slots, -1)
            results.append(self._people(slots, shared, limb_mean, px, py, ps, heatmaps.device, w, h))
        return results

    def _score_limbs(self, pafs: Tensor, x: Tensor, y: Tensor, valid: Tensor) -> Tensor:
        """Line-integral scores ``[B, L, N, N]`` of every candidate pair of every limb, -1 where implausible.

        Only pairs of two valid candidates are sampled, as one list over the whole batch: a grid of all ``N x N``
        slots would pad every image of a batch to its most crowded joint (batches of 32 decoded 1.8x slower per
        image than single images that way).
        """
        b, _, h, w = pafs.shape
        n_limbs, n = len(self.limbs), x.shape[-1]
        la, lb = self._limb_a.to(x.device), self._limb_b.to(x.device)
        grid = (b, n_limbs, n, n)
        pair = flat_true(valid[:, la, :, None] & valid[:, lb, None, :]).to(x.device)  # flat into the grid
        grid_xa, grid_ya = x[:, la, :, None].expand(grid), y[:, la, :, None].expand(grid)
        ends = torch.stack([grid_xa, grid_ya, x[:, lb, None, :] - grid_xa, y[:, lb, None, :] - grid_ya])
        xa, ya, dx, dy = ends.reshape(4, -1).index_select(1, pair)  # [M] each: the listed pairs only
        length = torch.sqrt(dx * dx + dy * dy)
        ux, uy = dx / length.clamp_min(1e-6), dy / length.clamp_min(1e-6)
        t = torch.linspace(0.0, 1.0, self.samples, device=x.device)
        plane = torch.div(pair, n * n, rounding_mode="floor")  # b * L + limb
        field = sample_planes(pafs.reshape(b * n_limbs, 2, h, w), plane, xa[:, None] + dx[:, None] * t,
                              ya[:, None] + dy[:, None] * t)  # [2, M, samples]
        dot = field[0] * ux[:, None] + field[1] * uy[:, None]
        agreement = (dot > self.paf_threshold).float().mean(-1)
        # OpenPose's prior: limbs longer than half the image height are penalised.
        prior = (0.5 * h / length.clamp_min(1e-6) - 1.0).clamp_max(0.0)
        score = dot.mean(-1) + prior
        plausible = (length > 1e-3) & (agreement >= self.min_agreement) & (score > 0)
        scores = torch.full((b * n_limbs * n * n,), -1.0, device=x.device)
        scores[pair] = torch.where(plausible, score, -1.0)
        return scores.view(grid)

    def _connect(self, limb_scores: np.ndarray) -> np.ndarray:
        """Per-limb Hungarian matching. Returns connections ``[C, 4]``: limb, candidate a, candidate b, score."""
        allowed = limb_scores > 0
        counts = allowed.sum(axis=(1, 2))
        # A limb with a single plausible pair needs no solver: that pair is the matching.
        single = np.flatnonzero(counts == 1)
        limb_ids, rows, cols = [single], [], []
        if single.size:
            _, r, c = np.nonzero(allowed[single])
            rows.append(r)
            cols.append(c)
        for limb in np.flatnonzero(counts > 1):
            r, c = match_max(limb_scores[limb], allowed[limb])
            limb_ids.append(np.full(r.shape, limb))
            rows.append(r)
            cols.append(c)
        if not rows:
            return np.zeros((0, 4))
        limb_ids, rows, cols = np.concatenate(limb_ids), np.concatenate(rows), np.concatenate(cols)
        return np.stack([limb_ids, rows, cols, limb_scores[limb_ids, rows, cols]], axis=1)

    def _assemble(self, connections: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Merge connections into people, strongest first.

        Returns ``slots [P, K]`` (candidate index per joint, -1 if none) and the mean connection score ``[P]``.
        """
        k, n = valid.shape
        owner = np.full((k, n), -1, dtype=np.int64)
        slots = np.full((max(1, 2 * len(connections)), k), -1, dtype=np.int64)
        limb_sum = np.zeros(len(slots))
        limb_count = np.zeros(len(slots))
        alive = np.zeros(len(slots), dtype=bool)
        people = 0
        for c in np.argsort(-connections[:, 3], kind="stable"):
            limb, ia, ib, s = int(connections[c, 0]), int(connections[c, 1]), int(connections[c, 2]), connections[c, 3]
            ja, jb = self.limbs[limb]
            pa, pb = owner[ja, ia], owner[jb, ib]
            if pa < 0 and pb < 0:
                p = people
                people += 1
                alive[p] = True
                slots[p, ja], slots[p, jb] = ia, ib
                owner[ja, ia] = owner[jb, ib] = p
            elif pb < 0 or pa < 0:
                p, j, i = (pa, jb, ib) if pb < 0 else (pb, ja, ia)
                if slots[p, j] >= 0:
                    continue
                slots[p, j] = i
                owner[j, i] = p
            elif pa != pb:
                if ((slots[pa] >= 0) & (slots[pb] >= 0)).any():
                    continue
                moved = slots[pb] >= 0
                slots[pa, moved] = slots[pb, moved]
                owner[np.flatnonzero(moved), slots[pb, moved]] = pa
                limb_sum[pa] += limb_sum[pb]
                limb_count[pa] += limb_count[pb]
                alive[pb] = False
                p = pa
            else:
                p = pa
            limb_sum[p] += s
            limb_count[p] += 1
        keep = np.flatnonzero(alive[:people])
        groups, limb_mean = slots[keep], limb_sum[keep] / np.maximum(limb_count[keep], 1)
        # Candidates no connection reached are people of one keypoint; min_keypoints decides whether they stay.
        lone_j, lone_i = np.nonzero(valid & (owner < 0))
        lone = np.full((len(lone_j), k), -1, dtype=np.int64)
        lone[np.arange(len(lone_j)), lone_j] = lone_i
        return np.concatenate([groups, lone]), np.concatenate([limb_mean, np.zeros(len(lone_j))])

    def _share(self, slots: np.ndarray, limb_scores: np.ndarray) -> np.ndarray:
        """For each person's missing joints, a candidate already used elsewhere that a limb field links to it.

        Two people's same joints closer than the NMS window leave one peak; the person that lost it still has a
        plausible limb to it from its own neighbouring joint. Returns ``[P, K]`` candidate indices (-1: none), the
        best-scoring plausible link over all limbs (the first limb in graph order on ties).
        """
        k = slots.shape[1]
        # Every limb read both ways, limb-major: directed limb d goes from joint have[d] to joint lack[d].
        have, lack = self._share_have, self._share_lack
        scores = np.stack([limb_scores, limb_scores.transpose(0, 2, 1)], axis=1).reshape(-1, *limb_scores.shape[1:])
        own = slots[:, have]  # [P, 2L]
        eligible = (own >= 0) & (slots[:, lack] < 0)
        rows = scores[np.arange(len(have)), np.maximum(own, 0)]  # [P, 2L, N]
        pick = rows.argmax(axis=2)
        value = np.where(eligible, rows.max(axis=2), 0.0)
        # Per missing joint, the best directed limb ending there: [P, 2L, K] masked to the limbs' own joints.
        per_joint = np.where(self._share_ends[None], value[..., None], 0.0)
        best_limb = per_joint.argmax(axis=1)  # [P, K]
        people = np.arange(len(slots))[:, None]
        found = per_joint[people, best_limb, np.arange(k)] > 0
        return np.where(found, pick[people, best_limb], -1)

    def _people(self, slots: np.ndarray, shared: np.ndarray, limb_mean: np.ndarray, x: np.ndarray, y: np.ndarray,
                score: np.ndarray, device: torch.device, width: int, height: int) -> Poses:
        present = slots >= 0
        # Shared joints fill only joints a person lacks, and do not count in its score.
        idx = np.where(present, slots, np.maximum(shared, 0))
        joints = np.arange(slots.shape[1])[None, :]
        kpts = np.stack([x[joints, idx], y[joints, idx], score[joints, idx]], axis=-1)
        kpts *= (present | (shared >= 0))[..., None]
        person = (kpts[..., 2] * present).mean(axis=1) if len(kpts) else np.zeros(0)
        if self.person_score == "joints_and_limbs":
            person = person * np.where(present.sum(1) > 1, limb_mean, 1.0)
        return self.select(torch.as_tensor(kpts, dtype=torch.float32, device=device),
                           torch.as_tensor(person, dtype=torch.float32, device=device),
                           torch.as_tensor(present.sum(1), device=device), width, height)
