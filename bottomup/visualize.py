"""Drawing poses on images (OpenCV), for ``bottomup.predict`` and the notebooks."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from bottomup.poses import Poses
from bottomup.skeletons import Skeleton


def person_colour(i: int) -> tuple[int, int, int]:
    """A distinct RGB colour per person (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_poses(image: np.ndarray, poses: Poses, skeleton: Skeleton, min_keypoint_score: float = 0.0,
               thickness: int | None = None) -> np.ndarray:
    """A copy of ``image`` (``[H, W, 3]`` uint8 RGB) with each person's limbs and joints in its own colour.

    Keypoints with score at most ``min_keypoint_score`` are not drawn; nor are limbs touching them.
    """
    canvas = np.ascontiguousarray(image.copy())
    thickness = thickness or max(1, round(max(image.shape[:2]) / 300))
    kpts = poses.keypoints.detach().cpu().numpy()
    for i, person in enumerate(kpts):
        colour = person_colour(i)
        shown = person[:, 2] > min_keypoint_score
        for a, b in skeleton.limbs:
            if shown[a] and shown[b]:
                cv2.line(canvas, _pt(person[a]), _pt(person[b]), colour, thickness, cv2.LINE_AA)
        for j in np.flatnonzero(shown):
            cv2.circle(canvas, _pt(person[j]), thickness + 1, colour, -1, cv2.LINE_AA)
            cv2.circle(canvas, _pt(person[j]), thickness + 1, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def _pt(keypoint: np.ndarray) -> tuple[int, int]:
    return int(round(float(keypoint[0]))), int(round(float(keypoint[1])))


def save_rgb(path: str, image: np.ndarray) -> None:
    """Write an RGB image (PNG/JPEG by extension)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")
