"""Coordinate frames and affine transforms: the one place that converts between image, input and map coordinates.

Convention everywhere in bottomup: **pixel centres sit at integer coordinates** (pixel ``i`` covers ``[i-0.5, i+0.5)``),
as in OpenCV's ``warpAffine``. Scaling by ``s`` then maps ``x -> s * (x + 0.5) - 0.5`` (pixel *areas* scale), which is
what ``cv2.resize`` and ``torch.nn.functional.interpolate(align_corners=False)`` do, so maps produced at stride ``r``
relate to the input by ``x_input = r * (x_map + 0.5) - 0.5``.

Transforms are 3x3 homogeneous float64 numpy matrices acting on column vectors ``(x, y, 1)``; compose with ``@``
(the right-hand transform applies first). Also here: where a person stands and how close its neighbours are
(:func:`person_centres`, :func:`neighbour_gaps`), measured in whatever frame its keypoints are given. Imports only
numpy.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def scaling(sx: float, sy: float | None = None) -> np.ndarray:
    """Resize by ``(sx, sy)`` under the pixel-centre convention: ``x -> sx * (x + 0.5) - 0.5``."""
    sy = sx if sy is None else sy
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def rotation(degrees: float, center: tuple[float, float]) -> np.ndarray:
    """Rotate by ``degrees`` (counter-clockwise on screen, y pointing down) about ``center``."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    return translation(*center) @ rot @ translation(-center[0], -center[1])


def hflip(width: int) -> np.ndarray:
    """Mirror an image of ``width`` pixels: ``x -> width - 1 - x``."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def stride_down(stride: float) -> np.ndarray:
    """Input pixels to the grid of a map at ``stride`` (``x_map = (x_input + 0.5) / stride - 0.5``)."""
    return scaling(1.0 / stride)


def invert(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.inv(_as3x3(matrix))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points ``[..., 2]`` (extra trailing columns such as visibility are kept unchanged)."""
    m = _as3x3(matrix)
    pts = np.asarray(points, dtype=np.float64)
    out = pts.copy()
    out[..., :2] = pts[..., :2] @ m[:2, :2].T + m[:2, 2]
    return out


def centred(width: int, height: int, size: int, scale: float, degrees: float = 0.0,
            shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Image -> square input matrix: the centre of a ``width`` x ``height`` image goes to the centre of the ``size``
    input plus ``shift``, scaled by ``scale`` and rotated by ``degrees`` about it. Training's random affine and
    evaluation's fit are both this, so an image with no augmentation lands exactly where evaluation puts it."""
    # Pixel centres at integers: an n-pixel side spans [-0.5, n - 0.5), so its middle is (n - 1) / 2.
    return (translation((size - 1) / 2.0 + shift[0], (size - 1) / 2.0 + shift[1]) @ rotation(degrees, (0.0, 0.0))
            @ np.diag([scale, scale, 1.0]) @ translation(-(width - 1) / 2.0, -(height - 1) / 2.0))


def fit_into(width: int, height: int, size: int) -> tuple[np.ndarray, float]:
    """Scale an image so its longer side fits a square of ``size``, centred in it; returns (image->input matrix,
    scale).

    Centred, because that is where training without augmentation puts the image: a network evaluated on exactly the
    inputs it was trained on sees them at the same place. (Convolutions with zero padding are not
    translation-invariant: a model that memorised 80 images lost AP 0.766 -> 0.233 when evaluated with them shifted to
    the top-left corner.)
    """
    s = size / max(width, height)
    return centred(width, height, size, s), s


def cv2_matrix(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 float32 form that ``cv2.warpAffine`` takes."""
    return _as3x3(matrix)[:2].astype(np.float32)


# A person whose nearest neighbour's centre lies within this fraction of the person's own size (see
# :func:`neighbour_gaps`) overlaps that neighbour: the case tag-based grouping gets wrong most
# (``experiments/tag_separation.py``). Shared by dataset statistics and AP by neighbour distance.
CLOSE_NEIGHBOUR_GAP = 0.25


def person_centres(points: np.ndarray, labelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each person's centre and size from its labelled keypoints.

    Args:
        points: ``[..., P, K, 2]`` keypoint coordinates.
        labelled: ``[..., P, K]`` bool.
    Returns:
        ``centre [..., P, 2]``, the mean of the labelled keypoints (0 for a person without any), and ``size [..., P]``,
        the longer side of their bounding box, at least 1.
    """
    count = np.maximum(labelled.sum(axis=-1), 1)[..., None]
    centre = np.where(labelled[..., None], points, 0.0).sum(axis=-2) / count
    low = np.where(labelled[..., None], points, np.inf).min(axis=-2)
    high = np.where(labelled[..., None], points, -np.inf).max(axis=-2)
    return centre, np.maximum((high - low).max(axis=-1), 1.0)  # -inf for a person without any: 1


def neighbour_gaps(centre: np.ndarray, size: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``[..., P]``: distance from each person's centre to the nearest other present person's, over its own size
    (``inf`` without such a neighbour). Arguments as :func:`person_centres` returns them, ``present [..., P]`` bool."""
    distance = np.linalg.norm(centre[..., :, None, :] - centre[..., None, :, :], axis=-1)
    others = present[..., None, :] & ~np.eye(centre.shape[-2], dtype=bool)
    return np.where(others, distance, np.inf).min(axis=-1, initial=np.inf) / size


def annotated_gaps(keypoints: Sequence[Sequence[float]]) -> np.ndarray:
    """Neighbour gaps (:func:`neighbour_gaps`) of the people of one image, from their COCO ``keypoints`` fields (one
    flat ``[x, y, v] * K`` list per person).

    People without a labelled keypoint (``v > 0``) are left out; returns ``[P']``, empty when fewer than two remain.
    """
    if len(keypoints) < 2:
        return np.zeros(0)
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(len(keypoints), -1, 3)
    keypoints = keypoints[(keypoints[..., 2] > 0).any(axis=-1)]
    if len(keypoints) < 2:
        return np.zeros(0)
    centre, size = person_centres(keypoints[..., :2], keypoints[..., 2] > 0)
    return neighbour_gaps(centre, size, np.ones(len(keypoints), dtype=bool))


def _as3x3(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m.shape != (3, 3):
        raise ValueError(f"affine matrix must be 2x3 or 3x3, got shape {m.shape}")
    return m
