"""Assignment and duplicate removal shared by the decoders: Hungarian matching, OKS and pose NMS."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

# Cost given to forbidden pairs so the solver always has a feasible full assignment; such pairs are dropped after.
_FORBIDDEN = 1.0e9


def match_max(scores: np.ndarray, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-total-score bipartite matching (Hungarian, via SciPy's compiled solver).

    Args:
        scores: ``[N, M]`` pair scores.
        allowed: optional ``[N, M]`` boolean mask; pairs outside it are never returned.
    Returns:
        ``(rows, cols)`` index arrays of the matched pairs.
    """
    if scores.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    if min(scores.shape) == 1:
        # One row or one column: the optimum is its best allowed entry; no solver call needed.
        masked = scores if allowed is None else np.where(allowed, scores, -np.inf)
        best = int(np.argmax(masked))
        if not np.isfinite(masked.flat[best]):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        row, col = np.unravel_index(best, scores.shape)
        return np.array([row]), np.array([col])
    cost = -scores.astype(np.float64)
    if allowed is not None:
        cost = np.where(allowed, cost, _FORBIDDEN)
    rows, cols = linear_sum_assignment(cost)
    if allowed is not None:
        ok = allowed[rows, cols]
        rows, cols = rows[ok], cols[ok]
    return rows, cols


def oks_matrix(a: Tensor, b: Tensor, sigmas: Tensor, min_score: float = 0.0) -> Tensor:
    """Object keypoint similarity between every pose of ``a`` ``[P, K, 3]`` and ``b`` ``[Q, K, 3]`` -> ``[P, Q]``.

    Follows COCO's definition with the area of the larger of each pair's keypoint boxes standing in for the
    segment area (there is none for predictions); keypoints count where both scores exceed ``min_score``.
    """
    var = (2.0 * sigmas.to(a.device, torch.float32)) ** 2
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)
    area = torch.maximum(_box_area(a, min_score)[:, None], _box_area(b, min_score)[None, :]).clamp_min(1.0)
    sim = torch.exp(-d2 / (2.0 * var * area[..., None]))
    both = (a[:, None, :, 2] > min_score) & (b[None, :, :, 2] > min_score)
    return (sim * both).sum(-1) / both.sum(-1).clamp_min(1)


def _box_area(poses: Tensor, min_score: float) -> Tensor:
    present = poses[..., 2] > min_score
    big = torch.finfo(poses.dtype).max
    xs, ys = poses[..., 0], poses[..., 1]
    w = torch.where(present, xs, -big).amax(-1) - torch.where(present, xs, big).amin(-1)
    h = torch.where(present, ys, -big).amax(-1) - torch.where(present, ys, big).amin(-1)
    return torch.where(present.any(-1), w.clamp_min(0) * h.clamp_min(0), torch.zeros_like(w))


def pose_nms(keypoints: Tensor, scores: Tensor, sigmas: Tensor, threshold: float) -> Tensor:
    """Greedy OKS non-maximum suppression; returns the indices of the kept poses, best first.

    A pose is dropped when its OKS with an already kept, higher-scoring pose exceeds ``threshold``. This removes the
    duplicate people that a decoder makes when two candidates of one joint both claim the same person.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    if keypoints.shape[0] <= 1 or threshold >= 1.0:
        return order
    oks = oks_matrix(keypoints[order], keypoints[order], sigmas).cpu().numpy()
    kept: list[int] = []
    for i in range(len(order)):
        if not kept or oks[i, kept].max() <= threshold:
            kept.append(i)
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]
