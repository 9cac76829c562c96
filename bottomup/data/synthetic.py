"""The embedded default dataset: synthetic multi-person images with COCO 17-keypoint annotations.

:func:`ensure_synthetic` writes a COCO-format dataset (JPEG images plus ``person_keypoints_{train,val}.json``) into a
cache folder the first time it is asked for, so every part of bottomup can be trained and tested on a CPU in minutes
without downloading anything. The generator is deterministic: image ``i`` of a split depends only on
``(seed, split, i)``.

What an image holds, and why:

* **Articulated people** drawn from a 2-D stick model with human proportions (head with eyes, ears and nose, neck,
  torso, arms with elbows and wrists, legs with knees and ankles), random joint angles, random body turn
  (narrower shoulders), random lean and, now and then, a strongly tilted person. Limbs are thick round-capped lines,
  the torso a filled quadrilateral, the head a disc.
* **Appearance that helps grouping, as in real photos:** each person has their own shirt, trouser, skin and hair
  colours; the person's *left* limbs are a lighter shade and the *right* ones a darker shade, and every limb joint
  carries a pad that is near-white on the left side and near-black on the right. Left/right is then a local mark,
  learnable even for people seen from behind (no face drawn; nose and eyes unlabelled, ears labelled): left/right
  confusion is a detection problem of its own that would otherwise hide the grouping differences this dataset is
  for. (So the data config turns flip augmentation off: a mirrored image swaps the labels but not the marks.) An
  ear turned behind the head is not drawn and not labelled.
* **Hard cases:** people at many scales (a few pixels to the full image), 0-8 per image with a tail of dense groups
  and clusters, drawn back to front (feet lower in the image = nearer), so people overlap and occlude each other and
  neighbours' arms cross. A joint hidden by a nearer person or a foreground object gets ``v = 1``, a visible one
  ``v = 2``; joints outside the image are not labelled (``0, 0, 0``).
* **Distractors:** textured backgrounds (gradients, low-frequency noise, stripes, pixel noise) with random clutter
  (ellipses, boxes, polylines and limb-like sticks that are not people).
* **Masks exercised:** people under :data:`MIN_LABELLED_FRACTION` of the image side get no keypoints
  (``num_keypoints = 0``, with a segmentation), and a few images hold a crowd of tiny people annotated as one
  ``iscrowd = 1`` region (RLE or polygon segmentation), exactly what COCO does.

:func:`describe` reports statistics (people per image, overlap, occlusion, crossing limbs) of any COCO keypoint file.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from bottomup import geometry
from bottomup.errors import DataError
from bottomup.skeletons import COCO_KEYPOINTS, COCO_LIMBS

# Bump when the drawing or the annotation logic changes: caches made by an older generator are then regenerated.
GENERATOR_VERSION = 7
MARKER = "synthetic.json"
SPLITS = ("train", "val")

# People shorter than this fraction of the image's shorter side (head to ankle) are annotated without keypoints, as
# COCO leaves tiny people unlabelled. Relative, because every image is scaled to the network input: at the default
# 128-pixel input a labelled person is at least ~25 input pixels (6 stride-4 map pixels) tall.
MIN_LABELLED_FRACTION = 0.2
# Distribution of the number of people per image, 0..8: most images hold a few, a tail holds crowds.
PEOPLE_PER_IMAGE = np.array([0.05, 0.25, 0.22, 0.16, 0.11, 0.08, 0.06, 0.04, 0.03])
# Median ratio of segment area to bounding-box area of COCO's labelled people (val2017 subset: 0.538).
COCO_AREA_PER_BOX = 0.53
# Of the images with two or more people, the fraction whose people stand together (side by side closer than an arm
# span, or a loose cluster) rather than independently scattered. The default makes a set about four times more crowded
# than COCO by `describe()`'s close_neighbour_fraction (0.36 against 0.09); 0 scatters everyone (0.30: people large
# in small images still stand close).
GROUPED_FRACTION = 0.55
# How the grouped images split between rows ("group") and clusters.
_ROW_SHARE_OF_GROUPED = 0.3 / 0.55
# Probability that an image holds a tiny-people crowd region (iscrowd = 1) and a foreground occluder.
CROWD_PROBABILITY = 0.08
OCCLUDER_PROBABILITY = 0.15

# Owner-map values: 0 is background, people are 1..250, a crowd region and foreground objects have their own.
_CROWD_OWNER = 254
_OCCLUDER_OWNER = 255
# cv2 drawing with 4 fractional bits, so small people keep sub-pixel joint positions.
_SHIFT = 4
_ONE = 1 << _SHIFT

_K = {name: i for i, name in enumerate(COCO_KEYPOINTS)}


@dataclass(frozen=True)
class SyntheticPaths:
    """Where a generated synthetic dataset lives."""

    root: Path
    train_annotations: Path
    val_annotations: Path
    train_images: Path
    val_images: Path

    @classmethod
    def at(cls, root: str | Path) -> "SyntheticPaths":
        root = Path(root)
        return cls(root, root / "annotations" / "person_keypoints_train.json",
                   root / "annotations" / "person_keypoints_val.json", root / "train", root / "val")

    def annotations(self, split: str) -> Path:
        return self.train_annotations if split == "train" else self.val_annotations

    def images(self, split: str) -> Path:
        return self.train_images if split == "train" else self.val_images


def ensure_synthetic(root: str | Path, num_train: int = 1000, num_val: int = 200,
                     image_size: int | tuple[int, int] = (128, 160), seed: int = 0,
                     grouped_fraction: float = GROUPED_FRACTION) -> SyntheticPaths:
    """Generate the synthetic dataset into ``root`` unless it is already there with the same parameters.

    Idempotent: ``root/synthetic.json`` records the parameters (and :data:`GENERATOR_VERSION`); a folder made with
    other parameters is replaced, while a non-empty folder without that marker is refused, never deleted. Generation
    happens in a temporary sibling folder renamed into place, so an interrupted run or several processes racing (one
    per GPU) never leave a half-written dataset behind.

    Args:
        root: the cache folder (created; its parent must be writable).
        num_train, num_val: images per split.
        image_size: side lengths of the images, ``(low, high)`` drawn uniformly per side, or one fixed size.
        seed: the generator's seed.
        grouped_fraction: of the images with two or more people, the fraction whose people stand together in a row
            or a cluster (:data:`GROUPED_FRACTION`); the rest are scattered independently.
    Returns:
        The paths of the annotation files and image folders.
    """
    root = Path(root)
    low, high = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if not 16 <= low <= high:
        raise ValueError(f"image_size must be one size or (low, high) with 16 <= low <= high, got {image_size}")
    if not 0.0 <= grouped_fraction <= 1.0:
        raise ValueError(f"grouped_fraction must be in [0, 1], got {grouped_fraction}")
    params = {"version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
              "image_size": [low, high], "seed": int(seed), "grouped_fraction": float(grouped_fraction)}
    if _marker_matches(root, params):
        return SyntheticPaths.at(root)
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).exists():
        raise DataError(f"synthetic dataset folder {root} exists and is not a synthetic cache (no {MARKER}); "
                        f"refusing to replace it. Point data.root (or BOTTOMUP_CACHE) at another folder.")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-", dir=root.parent))
    try:
        paths = SyntheticPaths.at(tmp)
        paths.root.joinpath("annotations").mkdir()
        for split, count in zip(SPLITS, (num_train, num_val)):
            paths.images(split).mkdir()
            dataset = generate_split(paths.images(split), split, count, (low, high), seed, grouped_fraction)
            paths.annotations(split).write_text(json.dumps(dataset, separators=(",", ":")))
        (tmp / MARKER).write_text(json.dumps(params))
        if _marker_matches(root, params):
            # Another process finished first and may already be reading its copy: keep it, drop ours.
            return SyntheticPaths.at(root)
        if root.exists():
            # An empty folder or a cache made with other parameters (checked above): move it aside, then delete.
            stale = root.with_name(f"{root.name}.old-{uuid.uuid4().hex}")
            root.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(root)
        except OSError:
            # Another process renamed its copy in first; use it if it is what we wanted.
            if not _marker_matches(root, params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SyntheticPaths.at(root)


def _marker_matches(root: Path, params: dict[str, Any]) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def coco_category() -> dict[str, Any]:
    """The COCO person category (17 keypoints, 1-based skeleton): what the generated files declare."""
    return {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_LIMBS]}


def generate_split(image_dir: str | Path, split: str, num_images: int, image_size: tuple[int, int],
                   seed: int, grouped_fraction: float = GROUPED_FRACTION) -> dict[str, Any]:
    """Draw ``num_images`` images into ``image_dir`` and return their COCO annotation dict."""
    image_dir = Path(image_dir)
    split_code = SPLITS.index(split)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, split_code, index])
        width, height = (int(v) for v in rng.integers(image_size[0], image_size[1] + 1, size=2))
        image, people = render_scene(rng, width, height, grouped_fraction)
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        cv2.imwrite(str(image_dir / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for person in people:
            annotations.append(dict(person, id=len(annotations) + 1, image_id=image_id, category_id=1))
    return {"info": {"description": f"bottomup synthetic people, split {split}, seed {seed}",
                     "version": GENERATOR_VERSION},
            "images": images, "annotations": annotations, "categories": [coco_category()]}


# --------------------------------------------------------------------------------------------------------------------
# Scene


@dataclass
class _Person:
    """One drawn person: joints ``[17, 2]`` in image pixels, which are labelled (not behind the head / face), looks."""

    joints: np.ndarray
    labelled: np.ndarray
    height: float
    head: tuple[np.ndarray, float]
    facing: int
    look: dict[str, np.ndarray]


def render_scene(rng: np.random.Generator, width: int, height: int,
                 grouped_fraction: float = GROUPED_FRACTION) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image ``[H, W, 3]`` uint8 RGB and its annotations (without ids) drawn from ``rng``."""
    image = _background(rng, width, height)
    owner = np.zeros((height, width), dtype=np.uint8)
    canvas = _Canvas(image, owner)
    annotations: list[dict[str, Any]] = []
    if rng.random() < CROWD_PROBABILITY:
        annotations.append(_draw_crowd(rng, canvas))
    people = _place_people(rng, width, height, grouped_fraction)
    for pid, person in enumerate(people, start=1):
        _draw_person(canvas, person, pid)
    if rng.random() < OCCLUDER_PROBABILITY:
        _draw_shape(rng, canvas, _OCCLUDER_OWNER, big=True)
    for pid, person in enumerate(people, start=1):
        ann = _annotate(person, owner, pid)
        if ann is not None:
            annotations.append(ann)
    return image, annotations


class _Canvas:
    """Draws every primitive twice: anti-aliased in colour on the image, and as the owner id on the owner map."""

    def __init__(self, image: np.ndarray, owner: np.ndarray) -> None:
        self.image = image
        self.owner = owner
        self.height, self.width = owner.shape

    @staticmethod
    def _fixed(point: np.ndarray) -> tuple[int, int]:
        return int(round(point[0] * _ONE)), int(round(point[1] * _ONE))

    def line(self, a: np.ndarray, b: np.ndarray, thickness: float, colour: np.ndarray, who: int) -> None:
        t = max(1, int(round(thickness)))
        for target, value, kind in ((self.image, colour.tolist(), cv2.LINE_AA), (self.owner, who, cv2.LINE_8)):
            cv2.line(target, self._fixed(a), self._fixed(b), value, t, kind, _SHIFT)

    def circle(self, centre: np.ndarray, radius: float, colour: np.ndarray, who: int) -> None:
        r = max(1, int(round(radius * _ONE)))
        for target, value, kind in ((self.image, colour.tolist(), cv2.LINE_AA), (self.owner, who, cv2.LINE_8)):
            cv2.circle(target, self._fixed(centre), r, value, -1, kind, _SHIFT)

    def polygon(self, points: np.ndarray, colour: np.ndarray, who: int) -> None:
        pts = np.round(np.asarray(points) * _ONE).astype(np.int32)
        for target, value, kind in ((self.image, colour.tolist(), cv2.LINE_AA), (self.owner, who, cv2.LINE_8)):
            cv2.fillPoly(target, [pts], value, kind, _SHIFT)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Gradient + low-frequency noise + optional stripes + pixel noise, then random clutter shapes."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(width, height)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    image = c0 + ramp[..., None] * (c1 - c0)
    cells = rng.uniform(-1, 1, size=(int(rng.integers(2, 12)), int(rng.integers(2, 12)), 3)).astype(np.float32)
    image += rng.uniform(10, 60) * cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.4:
        period = rng.uniform(4, 40)
        phase = (xs * math.cos(angle + 1.0) + ys * math.sin(angle + 1.0)) * (2 * math.pi / period)
        image += rng.uniform(10, 40) * np.sin(phase)[..., None] * rng.uniform(-1, 1, size=3).astype(np.float32)
    image += rng.normal(0, rng.uniform(0, 10), size=(height, width, 1)).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    canvas = _Canvas(image, np.zeros((height, width), dtype=np.uint8))
    for _ in range(int(rng.integers(1, 7))):
        _draw_shape(rng, canvas, 0, big=False)
    return image


def _draw_shape(rng: np.random.Generator, canvas: _Canvas, who: int, big: bool) -> None:
    """A non-person shape: ellipse, box, polyline or a limb-like stick (so thick lines alone do not mean 'limb')."""
    size = min(canvas.width, canvas.height) * (rng.uniform(0.2, 0.5) if big else rng.uniform(0.04, 0.3))
    centre = rng.uniform((0, 0), (canvas.width, canvas.height))
    colour = rng.uniform(0, 255, size=3)
    kind = int(rng.integers(4))
    if kind == 0:
        axes = (max(1, int(size / 2)), max(1, int(size * rng.uniform(0.2, 0.6))))
        for target, value in ((canvas.image, colour.tolist()), (canvas.owner, who)):
            cv2.ellipse(target, (int(centre[0]), int(centre[1])), axes, rng.uniform(0, 180), 0, 360, value, -1,
                        cv2.LINE_AA if target is canvas.image else cv2.LINE_8)
    elif kind == 1:
        half = size / 2 * rng.uniform(0.3, 1.0, size=2)
        angle = rng.uniform(0, math.pi)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ rot.T + centre
        canvas.polygon(corners, colour, who)
    elif kind == 2:
        points = centre + np.cumsum(rng.normal(0, size / 3, size=(int(rng.integers(3, 6)), 2)), axis=0)
        for a, b in zip(points[:-1], points[1:]):
            canvas.line(a, b, rng.uniform(1, 3), colour, who)
    else:
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-9
        canvas.line(centre - direction * size / 2, centre + direction * size / 2, size * rng.uniform(0.1, 0.3),
                    colour, who)


def _place_people(rng: np.random.Generator, width: int, height: int, grouped_fraction: float) -> list[_Person]:
    """People of one image, sorted back to front (lower feet = nearer = drawn later)."""
    count = int(rng.choice(len(PEOPLE_PER_IMAGE), p=PEOPLE_PER_IMAGE / PEOPLE_PER_IMAGE.sum()))
    side = min(width, height)
    row = grouped_fraction * _ROW_SHARE_OF_GROUPED
    # One draw per image of two or more people whatever the setting (even 0), so an image scattered under one
    # setting is the same image under every setting that still scatters it: lowering grouped_fraction re-places
    # only the grouped images' people.
    mode = (rng.choice(["scatter", "group", "cluster"], p=[1.0 - grouped_fraction, row, grouped_fraction - row])
            if count >= 2 else "scatter")
    base = side * rng.uniform(0.6, 1.0)
    people = []
    for i in range(count):
        if mode == "scatter":
            # Mostly people large enough to resolve their joints at a 128-pixel input; a fifth are tiny
            # background figures, left unlabelled and masked like COCO's.
            h = side * (rng.uniform(0.55, 1.0) if rng.random() < 0.8 else rng.uniform(0.08, 0.2))
            x = rng.uniform(-0.05, 1.05) * width
            centre = np.array([x, rng.uniform(0.45 * h, max(0.45 * h, height - 0.3 * h))])
        elif mode == "group":
            # Side by side closer than an arm span, so neighbours' arms cross and bodies overlap.
            h = base * math.exp(rng.normal(0, 0.1))
            spacing = base * rng.uniform(0.15, 0.4)
            row_x = width / 2 + (i - (count - 1) / 2) * spacing
            x = row_x + rng.normal(0, 0.03 * base)
            centre = np.array([x, height / 2 + 0.05 * base + rng.normal(0, 0.06 * base)])
        else:
            h = base * math.exp(rng.normal(0, 0.15))
            centre = np.array([width / 2 + rng.normal(0, 0.35 * base), height / 2 + rng.normal(0, 0.12 * base)])
        people.append(_pose(rng, centre, h))
    return sorted(people, key=lambda p: p.joints[[_K["left_ankle"], _K["right_ankle"]], 1].max())


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _pose(rng: np.random.Generator, pelvis: np.ndarray, height: float) -> _Person:
    """A random articulated pose of a person ``height`` pixels tall (head to ankle) with the pelvis at ``pelvis``.

    Angles are in image coordinates (y down); ``up`` and ``right`` are the body's axes after lean and tilt. The
    person faces the camera (``facing = +1``: their left is on the image's right) or away (``-1``).
    """
    facing = 1 if rng.random() < 0.75 else -1
    tilt = rng.normal(0, 0.15) if rng.random() < 0.85 else rng.uniform(-1.6, 1.6)
    right = _unit(tilt)
    up = np.array([right[1], -right[0]])
    turn = rng.uniform(0.45, 1.0)  # body turn: shoulders and hips look narrower
    foreshorten = rng.uniform(0.75, 1.0, size=8)  # limbs pointing at the camera look shorter
    j = np.zeros((17, 2))
    neck = pelvis + 0.30 * height * up
    for side, sign in (("left", facing), ("right", -facing)):
        j[_K[f"{side}_shoulder"]] = neck + sign * 0.11 * turn * height * right - 0.01 * height * up
        j[_K[f"{side}_hip"]] = pelvis + sign * 0.08 * turn * height * right
    for n, (side, sign) in enumerate((("left", facing), ("right", -facing))):
        outward = sign * right
        # Shoulder angle from hanging down: mostly down, sometimes raised, sometimes across the chest.
        kind = rng.random()
        lift = (rng.uniform(0.1, 0.9) if kind < 0.55 else rng.uniform(0.9, 3.0) if kind < 0.85
                else rng.uniform(-1.1, 0.1))
        upper = -up * math.cos(lift) + outward * math.sin(lift)
        bend = rng.uniform(-0.4, 2.4) * (1 if rng.random() < 0.5 else -1)
        fore = upper * math.cos(bend) + np.array([-upper[1], upper[0]]) * math.sin(bend)
        elbow = j[_K[f"{side}_shoulder"]] + 0.16 * height * foreshorten[n] * upper
        j[_K[f"{side}_elbow"]] = elbow
        j[_K[f"{side}_wrist"]] = elbow + 0.14 * height * foreshorten[n + 2] * fore
        spread = rng.uniform(-0.25, 0.6) if rng.random() < 0.85 else rng.uniform(0.6, 1.4)
        thigh = -up * math.cos(spread) + outward * math.sin(spread)
        knee_bend = rng.uniform(0.0, 1.5) * (1 if rng.random() < 0.5 else -1)
        shin = thigh * math.cos(knee_bend) + np.array([-thigh[1], thigh[0]]) * math.sin(knee_bend)
        knee = j[_K[f"{side}_hip"]] + 0.24 * height * foreshorten[n + 4] * thigh
        j[_K[f"{side}_knee"]] = knee
        j[_K[f"{side}_ankle"]] = knee + 0.23 * height * foreshorten[n + 6] * shin
    head_up = up * math.cos(rng.normal(0, 0.2)) + right * math.sin(rng.normal(0, 0.2))
    head_right = np.array([-head_up[1], head_up[0]])
    radius = 0.065 * height
    centre = neck + 0.13 * height * head_up
    yaw = rng.uniform(-0.5, 0.5)  # the face turns sideways: features slide, the far ear hides behind the head
    labelled = np.ones(17, dtype=bool)
    for side, sign in (("left", facing), ("right", -facing)):
        j[_K[f"{side}_eye"]] = centre + radius * ((0.38 * sign + 0.6 * yaw) * head_right + 0.2 * head_up)
        j[_K[f"{side}_ear"]] = centre + radius * (0.9 * sign - 0.3 * yaw) * head_right
        # A person facing the camera turns one ear behind the head; facing away, both ears show.
        labelled[_K[f"{side}_ear"]] = facing < 0 or sign * yaw < 0.3
    j[_K["nose"]] = centre + radius * (0.6 * yaw * head_right - 0.15 * head_up)
    if facing < 0:
        labelled[[_K["nose"], _K["left_eye"], _K["right_eye"]]] = False
    look = {"shirt": rng.uniform(20, 235, size=3), "trousers": rng.uniform(20, 235, size=3),
            "skin": np.array([rng.uniform(90, 240), 0, 0]), "hair": rng.uniform(0, 120, size=3),
            "shoes": rng.uniform(0, 80, size=3)}
    look["skin"] = look["skin"][0] * np.array([1.0, rng.uniform(0.7, 0.85), rng.uniform(0.55, 0.75)])
    return _Person(j, labelled, float(height), (centre, radius), facing, look)


def _shade(colour: np.ndarray, side: str) -> np.ndarray:
    """The person's left side lighter, the right side darker, so left and right can be told apart."""
    return colour + 0.4 * (255 - colour) if side == "left" else colour * 0.6


def _pad(colour: np.ndarray, side: str) -> np.ndarray:
    """The patch on a joint (a shoulder seam, an elbow or knee pad, a cuff, a shoe): joints get a local mark, as real
    joints do with creases and seams, so a small network learns to find them from a few thousand images. Near-white
    on the person's left, near-black on the right, whatever the clothes: a joint's side can be read locally."""
    return 0.3 * colour + 0.7 * 235.0 if side == "left" else 0.3 * colour


def _draw_person(canvas: _Canvas, person: _Person, who: int) -> None:
    j, h, look = person.joints, person.height, person.look
    for side in ("left", "right"):
        trousers = _shade(look["trousers"], side)
        canvas.line(j[_K[f"{side}_hip"]], j[_K[f"{side}_knee"]], 0.075 * h, trousers, who)
        canvas.line(j[_K[f"{side}_knee"]], j[_K[f"{side}_ankle"]], 0.06 * h, trousers, who)
        canvas.circle(j[_K[f"{side}_knee"]], 0.045 * h, _pad(trousers, side), who)
        canvas.circle(j[_K[f"{side}_ankle"]], 0.035 * h, _pad(look["shoes"], side), who)
    torso = j[[_K["left_shoulder"], _K["right_shoulder"], _K["right_hip"], _K["left_hip"]]]
    canvas.polygon(torso, look["shirt"], who)
    for a, b in ((_K["left_shoulder"], _K["left_hip"]), (_K["right_shoulder"], _K["right_hip"]),
                 (_K["left_shoulder"], _K["right_shoulder"])):
        canvas.line(j[a], j[b], 0.06 * h, look["shirt"], who)
    for side in ("left", "right"):
        canvas.circle(j[_K[f"{side}_hip"]], 0.04 * h, _pad(look["trousers"], side), who)
    centre, radius = person.head
    neck = (j[_K["left_shoulder"]] + j[_K["right_shoulder"]]) / 2
    canvas.line(neck, centre, 0.05 * h, look["skin"] * 0.9, who)
    for side in ("left", "right"):
        if person.labelled[_K[f"{side}_ear"]] and person.facing > 0:
            canvas.circle(j[_K[f"{side}_ear"]], 0.3 * radius, _shade(look["skin"], side), who)
    canvas.circle(centre, radius, look["hair"] if person.facing < 0 else look["skin"], who)
    if person.facing > 0:
        canvas.circle(centre + (centre - j[_K["nose"]]) * 1.6, 0.75 * radius, look["hair"], who)
        canvas.circle(centre, 0.8 * radius, look["skin"], who)
        for side in ("left", "right"):
            canvas.circle(j[_K[f"{side}_eye"]], max(0.6, 0.16 * radius), _shade(np.zeros(3) + 30, side), who)
        canvas.circle(j[_K["nose"]], max(0.5, 0.14 * radius), look["skin"] * 0.6, who)
    else:
        for side in ("left", "right"):
            canvas.circle(j[_K[f"{side}_ear"]], 0.3 * radius, _shade(look["skin"], side), who)
    for side in ("right", "left") if person.facing > 0 else ("left", "right"):
        shirt = _shade(look["shirt"], side)
        canvas.circle(j[_K[f"{side}_shoulder"]], 0.045 * h, _pad(shirt, side), who)
        canvas.line(j[_K[f"{side}_shoulder"]], j[_K[f"{side}_elbow"]], 0.055 * h, shirt, who)
        canvas.line(j[_K[f"{side}_elbow"]], j[_K[f"{side}_wrist"]], 0.045 * h, shirt, who)
        canvas.circle(j[_K[f"{side}_elbow"]], 0.035 * h, _pad(shirt, side), who)
        canvas.circle(j[_K[f"{side}_wrist"]], 0.03 * h, _pad(look["skin"], side), who)


def _annotate(person: _Person, owner: np.ndarray, who: int) -> dict[str, Any] | None:
    """COCO annotation of a drawn person from the owner map (its visible pixels); ``None`` if nothing shows."""
    height, width = owner.shape
    visible = owner == who
    if not visible.any():
        return None
    rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
    x, y = person.joints[:, 0], person.joints[:, 1]
    inside = person.labelled & (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    px = np.clip(np.round(x), 0, width - 1).astype(int)
    py = np.clip(np.round(y), 0, height - 1).astype(int)
    v = np.where(inside, np.where(owner[py, px] == who, 2, 1), 0)
    if person.height < MIN_LABELLED_FRACTION * min(width, height) or not (v == 2).any():
        v[:] = 0
    keypoints = np.zeros((17, 3))
    keypoints[v > 0, :2] = np.round(person.joints[v > 0], 2)
    keypoints[:, 2] = v
    bbox = [float(c) for c in mask_utils.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    # COCO's OKS divides by the person's segment area. A stick figure covers about a third of its box where a
    # clothed person covers about half (0.53 on COCO val), so use COCO's ratio: the same OKS scale as a real person
    # with this box, and an AP on par with COCO's for the same localisation error.
    area = COCO_AREA_PER_BOX * bbox[2] * bbox[3]
    return {"keypoints": [float(c) if i % 3 < 2 else int(c) for i, c in enumerate(keypoints.ravel())],
            "num_keypoints": int((v > 0).sum()), "bbox": bbox, "area": area, "iscrowd": 0, "segmentation": rle}


def _draw_crowd(rng: np.random.Generator, canvas: _Canvas) -> dict[str, Any]:
    """A dense patch of tiny people annotated as one ``iscrowd = 1`` region (RLE or polygon, alternately)."""
    side = min(canvas.width, canvas.height)
    centre = rng.uniform((0.2 * canvas.width, 0.3 * canvas.height), (0.8 * canvas.width, 0.8 * canvas.height))
    extent = side * rng.uniform(0.15, 0.3)
    for _ in range(int(rng.integers(6, 16))):
        pelvis = centre + rng.uniform(-extent, extent, size=2) * (1.0, 0.4)
        _draw_person(canvas, _pose(rng, pelvis, side * rng.uniform(0.06, 0.12)), _CROWD_OWNER)
    region = (canvas.owner == _CROWD_OWNER).astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(region))
    if rng.random() < 0.5:
        rle["counts"] = rle["counts"].decode("ascii")
        segmentation: Any = rle
    else:
        hull = cv2.convexHull(np.argwhere(region)[:, ::-1].astype(np.int32)).reshape(-1, 2)
        segmentation = [[float(c) for c in hull.ravel()]]
    return {"keypoints": [0] * 51, "num_keypoints": 0, "bbox": [float(c) for c in mask_utils.toBbox(rle)],
            "area": float(mask_utils.area(rle)), "iscrowd": 1, "segmentation": segmentation}


# --------------------------------------------------------------------------------------------------------------------
# Statistics


def describe(annotations: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Statistics of a COCO keypoint file (or its loaded dict), to judge how hard a dataset is for grouping.

    Returns a dict with ``images``; ``people`` (labelled, non-crowd); ``people_per_image`` (histogram
    ``{count: images}``); ``mean_people``; ``unlabelled_people`` (non-crowd, no keypoints); ``crowd_regions``;
    ``overlap_fraction`` (images where two labelled people's boxes intersect); ``occluded_joint_fraction``
    (labelled joints with ``v = 1``); ``crossing_fraction`` (images where a limb of one person crosses a limb of
    another, both limbs fully labelled, using the file's skeleton); ``close_neighbour_fraction`` (of the people in
    images with two or more, those whose nearest other person's centre lies within a quarter of their own size: a
    person's centre is the mean of its labelled joints, its size the longer side of their box, at least 1 pixel;
    the people AE tags confuse most, see ``experiments/tag_separation.py``).
    """
    data = json.loads(Path(annotations).read_text()) if isinstance(annotations, (str, Path)) else annotations
    limbs = np.array([[a - 1, b - 1] for a, b in data["categories"][0].get("skeleton", [])], dtype=int).reshape(-1, 2)
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in data["images"]}
    unlabelled = crowds = 0
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            crowds += 1
        elif ann.get("num_keypoints", 0) > 0:
            by_image[ann["image_id"]].append(ann)
        else:
            unlabelled += 1
    counts = [len(anns) for anns in by_image.values()]
    histogram = {int(c): int(n) for c, n in zip(*np.unique(counts, return_counts=True))} if counts else {}
    vis = np.concatenate([np.asarray(a["keypoints"]).reshape(-1, 3)[:, 2] for anns in by_image.values()
                          for a in anns] or [np.zeros(0)])
    overlap = sum(_boxes_overlap(anns) for anns in by_image.values())
    gaps = np.concatenate([geometry.annotated_gaps([a["keypoints"] for a in anns]) for anns in by_image.values()]
                          or [np.zeros(0)])
    crossing = sum(_limbs_cross(anns, limbs) for anns in by_image.values())
    n_images = max(len(by_image), 1)
    return {"images": len(by_image), "people": int(sum(counts)), "people_per_image": histogram,
            "mean_people": float(np.mean(counts)) if counts else 0.0, "unlabelled_people": unlabelled,
            "crowd_regions": crowds, "overlap_fraction": overlap / n_images,
            "occluded_joint_fraction": float((vis == 1).sum() / max((vis > 0).sum(), 1)),
            "crossing_fraction": crossing / n_images,
            "close_neighbour_fraction": float((gaps < geometry.CLOSE_NEIGHBOUR_GAP).mean()) if len(gaps) else 0.0}


def _boxes_overlap(anns: list[dict[str, Any]]) -> bool:
    if len(anns) < 2:
        return False
    b = np.array([a["bbox"] for a in anns], dtype=np.float64)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
    h = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
    inter = (w > 0) & (h > 0)
    np.fill_diagonal(inter, False)
    return bool(inter.any())


def _limbs_cross(anns: list[dict[str, Any]], limbs: np.ndarray) -> bool:
    """Whether a labelled limb segment of one person properly intersects one of another person."""
    if len(anns) < 2 or not len(limbs):
        return False
    segments, owners = [], []
    for n, ann in enumerate(anns):
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        ok = (k[limbs[:, 0], 2] > 0) & (k[limbs[:, 1], 2] > 0)
        segments.append(np.concatenate([k[limbs[ok, 0], :2], k[limbs[ok, 1], :2]], axis=1))
        owners.append(np.full(int(ok.sum()), n))
    seg = np.concatenate(segments)
    who = np.concatenate(owners)
    p, r = seg[:, :2], seg[:, 2:] - seg[:, :2]
    cross = r[:, None, 0] * r[None, :, 1] - r[:, None, 1] * r[None, :, 0]
    d = p[None] - p[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (d[..., 0] * r[None, :, 1] - d[..., 1] * r[None, :, 0]) / cross
        u = (d[..., 0] * r[:, None, 1] - d[..., 1] * r[:, None, 0]) / cross
    hit = (np.abs(cross) > 1e-9) & (t > 0) & (t < 1) & (u > 0) & (u < 1) & (who[:, None] != who[None])
    return bool(hit.any())

