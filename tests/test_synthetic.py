"""The synthetic default dataset: deterministic, cached, COCO-compatible, and hard enough (overlaps, crossings)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from bottomup.data import CocoKeypoints, SyntheticPaths, describe, ensure_synthetic
from bottomup.data import synthetic
from bottomup.data.synthetic import MARKER, generate_split
from bottomup.errors import DataError
from bottomup.skeletons import COCO, Skeleton

# pycocotools' RLE object predates numpy 2's __array__(copy=...) protocol; its annToMask still decodes right.
PYCOCOTOOLS_NUMPY2 = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    return ensure_synthetic(tmp_path_factory.mktemp("syn") / "synthetic", num_train=80, num_val=10, seed=0)


def test_generator_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = generate_split(tmp_path / "a", "train", 12, (128, 256), seed=5)
    second = generate_split(tmp_path / "b", "train", 12, (128, 256), seed=5)
    assert json.dumps(first) == json.dumps(second)
    for image in first["images"]:
        name = image["file_name"]
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    (tmp_path / "c").mkdir()
    assert json.dumps(generate_split(tmp_path / "c", "train", 12, (128, 256), seed=6)) != json.dumps(first)


def test_ensure_is_idempotent_and_regenerates_on_new_parameters(small: SyntheticPaths) -> None:
    stamp = small.train_annotations.stat().st_mtime_ns
    again = ensure_synthetic(small.root, num_train=80, num_val=10, seed=0)
    assert again == small and small.train_annotations.stat().st_mtime_ns == stamp
    other = ensure_synthetic(small.root.parent / "other", num_train=3, num_val=2, seed=0)
    ensure_synthetic(other.root, num_train=4, num_val=2, seed=0)
    assert len(json.loads(other.train_annotations.read_text())["images"]) == 4
    assert json.loads((other.root / MARKER).read_text())["num_train"] == 4
    leftovers = [p.name for p in small.root.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_files_declare_the_coco_skeleton_and_load_cleanly(small: SyntheticPaths) -> None:
    data = json.loads(small.train_annotations.read_text())
    assert Skeleton.from_coco_category(data["categories"][0]) is COCO
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = CocoKeypoints(small.train_annotations, small.train_images, input_size=128)
    assert ds.file.clipped == 0 and ds.file.dropped == 0 and len(ds) == 80
    for i in range(0, 80, 8):
        image = ds.load_image(i)
        assert image.shape[2] == 3 and 128 <= min(image.shape[:2]) and max(image.shape[:2]) <= 256


def test_annotations_follow_coco_conventions(small: SyntheticPaths) -> None:
    data = json.loads(small.train_annotations.read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    visibility = []
    for ann in data["annotations"]:
        kpts = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
        w, h = sizes[ann["image_id"]]
        labelled = kpts[:, 2] > 0
        assert ann["num_keypoints"] == labelled.sum()
        assert (kpts[~labelled] == 0).all()
        assert (kpts[labelled, 0] >= -0.5).all() and (kpts[labelled, 0] < w - 0.5).all()
        assert (kpts[labelled, 1] >= -0.5).all() and (kpts[labelled, 1] < h - 0.5).all()
        assert ann["area"] > 0 and len(ann["bbox"]) == 4
        visibility.extend(kpts[labelled, 2].tolist())
    assert {1, 2} <= set(visibility)
    kinds = {(a["iscrowd"], a["num_keypoints"] > 0) for a in data["annotations"]}
    assert {(0, True), (0, False), (1, False)} <= kinds  # people, unlabelled people and crowd regions


def test_statistics_show_crowds_overlaps_and_crossings(small: SyntheticPaths) -> None:
    stats = describe(small.train_annotations)
    assert stats["images"] == 80
    assert 0 in stats["people_per_image"] and max(stats["people_per_image"]) == 8
    assert 2.0 < stats["mean_people"] < 5.0
    assert stats["overlap_fraction"] > 0.3
    assert stats["crossing_fraction"] > 0.2
    assert stats["occluded_joint_fraction"] > 0.05
    assert stats["crowd_regions"] >= 1 and stats["unlabelled_people"] >= 1
    assert stats["close_neighbour_fraction"] > 0.2


def test_grouped_fraction_changes_only_the_grouped_images(tmp_path: Path) -> None:
    """At 0 nobody is placed in a row or cluster; images scattered at the default are the same at 0."""
    runs = {}
    for fraction in (synthetic.GROUPED_FRACTION, 0.3, 0.0, 1.0):
        folder = tmp_path / str(fraction)
        folder.mkdir()
        runs[fraction] = generate_split(folder, "train", 60, (128, 160), seed=0, grouped_fraction=fraction)
    default, scattered, grouped = runs[synthetic.GROUPED_FRACTION], runs[0.0], runs[1.0]
    assert describe(scattered)["close_neighbour_fraction"] < describe(default)["close_neighbour_fraction"] \
        < describe(grouped)["close_neighbour_fraction"]

    def people(data: dict) -> dict[int, list]:
        by_image: dict[int, list] = {img["id"]: [] for img in data["images"]}
        for ann in data["annotations"]:
            if not ann["iscrowd"]:
                by_image[ann["image_id"]].append(ann["keypoints"])
        return by_image

    alone = {i for i, anns in people(default).items() if len(anns) <= 1}
    assert all(people(data)[i] == people(default)[i] for data in (scattered, grouped) for i in alone)
    kept = {i for i, anns in people(default).items() if len(anns) >= 2 and people(scattered)[i] == anns}
    moved = {i for i, anns in people(default).items() if len(anns) >= 2 and people(scattered)[i] != anns}
    assert len(alone) >= 10 and len(kept) >= 10 and len(moved) >= 10  # scattered images stay, grouped ones move
    # An image scattered at the default stays scattered, and the same, at every lower setting.
    kept_at_03 = {i for i, anns in people(default).items() if len(anns) >= 2 and people(runs[0.3])[i] == anns}
    assert kept <= kept_at_03
    name = default["images"][min(kept) - 1]["file_name"]
    assert (tmp_path / str(synthetic.GROUPED_FRACTION) / name).read_bytes() == (tmp_path / "0.0" / name).read_bytes()
    with pytest.raises(ValueError, match="grouped_fraction"):
        ensure_synthetic(tmp_path / "bad", grouped_fraction=1.5)


def test_close_neighbours_are_people_whose_centres_lie_within_a_quarter_of_their_size() -> None:
    def person(image_id: int, points: list[tuple[float, float]]) -> dict:
        keypoints = [value for x, y in points for value in (x, y, 2)] + [0, 0, 0] * (17 - len(points))
        return {"image_id": image_id, "keypoints": keypoints, "num_keypoints": len(points), "iscrowd": 0,
                "bbox": [0, 0, 1, 1]}

    # Image 1: a tall person (size 40, centre (10, 20)) and a small one (size 8, centre (14, 24)), 5.7 px apart:
    # 0.14 of the tall one's size, 0.71 of the small one's. Image 2 holds one person, who is not counted.
    data = {"images": [{"id": 1}, {"id": 2}], "categories": [{"skeleton": []}],
            "annotations": [person(1, [(10, 0), (10, 40)]), person(1, [(10, 20), (18, 28)]),
                            person(2, [(0, 0), (5, 5)])]}
    assert describe(data)["close_neighbour_fraction"] == 0.5


def test_left_joints_are_marked_light_and_right_joints_dark(small: SyntheticPaths) -> None:
    """Left/right must be readable at the joint itself: brightness at visible left elbows, wrists, hips, knees and
    ankles against their right partners."""
    ds = CocoKeypoints(small.train_annotations, small.train_images, input_size=128)
    marked = [COCO.keypoints.index(f"{side}_{part}") for side in ("left", "right")
              for part in ("elbow", "wrist", "hip", "knee", "ankle")]
    brightness: dict[str, list[float]] = {"left": [], "right": []}
    for i in range(len(ds)):
        grey = ds.load_image(i).astype(float).mean(axis=2)
        for person in ds.annotation(i).keypoints:
            for k in marked:
                x, y, v = person[k]
                if v == 2:
                    side = COCO.keypoints[k].split("_")[0]
                    brightness[side].append(grey[int(round(y)), int(round(x))])
    left, right = np.array(brightness["left"]), np.array(brightness["right"])
    assert len(left) > 100 and len(right) > 100
    assert left.mean() > right.mean() + 100
    assert np.median(left) > 150 > np.median(right)


@PYCOCOTOOLS_NUMPY2
def test_crowd_regions_are_masked(small: SyntheticPaths) -> None:
    ds = CocoKeypoints(small.train_annotations, small.train_images, input_size=128)
    index = next(i for i, image_id in enumerate(ds.image_ids)
                 if any(a["iscrowd"] for a in ds.coco.imgToAnns.get(image_id, [])))
    crowd = next(a for a in ds.coco.imgToAnns[ds.image_ids[index]] if a["iscrowd"])
    region = ds.coco.annToMask(crowd).astype(bool)
    assert region.any() and ds.ignore_mask(index)[region].max() == 0


def test_a_foreign_folder_is_never_replaced(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=str(root)):
        ensure_synthetic(root, num_train=2, num_val=1)
    assert (root / "notes.txt").read_text() == "keep me"


def test_a_process_finishing_second_keeps_the_cache_of_the_first(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes (one per GPU) generate at once; the second to finish must not replace the first one's cache,
    which that process may already be reading."""
    root = tmp_path / "cache"
    generate = synthetic.generate_split
    first: list[int] = []

    def generate_while_another_process_finishes(*args, **kwargs):
        if not first:
            first.append(0)
            ensure_synthetic(root, num_train=2, num_val=1, image_size=32)
            first[0] = (root / MARKER).stat().st_ino
        return generate(*args, **kwargs)

    monkeypatch.setattr(synthetic, "generate_split", generate_while_another_process_finishes)
    ensure_synthetic(root, num_train=2, num_val=1, image_size=32)
    assert (root / MARKER).stat().st_ino == first[0]
    assert not [p for p in tmp_path.iterdir() if p != root]
