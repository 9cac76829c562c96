"""Plausible synthetic people for tests: a COCO-17 stick figure placed, scaled and bent."""

from __future__ import annotations

import numpy as np

# Person-centred COCO-17 template: unit = body height, origin between the hips, y down, the person facing the camera
# (their left on the image's right).
TEMPLATE = np.array([
    [0.00, -0.85], [0.03, -0.88], [-0.03, -0.88], [0.07, -0.86], [-0.07, -0.86],
    [0.17, -0.65], [-0.17, -0.65], [0.22, -0.40], [-0.22, -0.40], [0.24, -0.17], [-0.24, -0.17],
    [0.10, 0.00], [-0.10, 0.00], [0.11, 0.27], [-0.11, 0.27], [0.12, 0.52], [-0.12, 0.52],
])


def person(center: tuple[float, float], height: float, rng: np.random.Generator | None = None,
           visible: np.ndarray | None = None) -> np.ndarray:
    """``[17, 3]`` keypoints (x, y, v=2) of one person, with small random limb bends when ``rng`` is given."""
    pts = TEMPLATE * height
    if rng is not None:
        pts = pts + rng.normal(0.0, 0.03 * height, pts.shape)
    kpts = np.concatenate([pts + np.asarray(center), np.full((17, 1), 2.0)], axis=1)
    if visible is not None:
        kpts[~visible, :] = 0.0
    return kpts.astype(np.float32)


def crossing_pair() -> np.ndarray:
    """Two people side by side whose forearms cross: A's right wrist reaches past B's left wrist and vice versa."""
    a = person((200.0, 300.0), 200.0)
    b = person((290.0, 300.0), 200.0)
    a[9, :2] = (300.0, 250.0)   # A's left wrist (image right) reaches into B
    a[7, :2] = (250.0, 230.0)
    b[10, :2] = (190.0, 260.0)  # B's right wrist (image left) reaches into A
    b[8, :2] = (240.0, 240.0)
    return np.stack([a, b])


def crowd(count: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """``count`` people on a loose grid inside a ``size`` canvas, neighbouring rows overlapping by about 20 %."""
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(count * 1.5)))
    rows = int(np.ceil(count / cols))
    margin = 24.0
    height = min(1.2 * (size - 2 * margin) / rows / 1.4, (size - 2 * margin) / 1.5)
    span_y = size - 2 * margin - 1.4 * height
    people = []
    for i in range(count):
        r, c = divmod(i, cols)
        x = margin + 0.3 * height + (c + 0.5) * (size - 2 * margin - 0.6 * height) / cols
        y = margin + 0.9 * height + (r * span_y / (rows - 1) if rows > 1 else span_y / 2)
        people.append(person((x, y), height, rng))
    return np.stack(people)
