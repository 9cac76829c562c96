"""The data package: COCO-format loading and validation, masks, augmentation geometry, determinism, loaders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from bottomup import geometry
from bottomup.config import load_group
from bottomup.data import (Augmentation, CocoKeypoints, EvalTransform, TrainTransform, build_dataset, build_loader,
                           denormalize, normalize, read_image, train_matrix)
from bottomup.errors import ConfigError, DataError
from bottomup.methods.targets import downsample_mask, render_heatmaps
from bottomup.skeletons import COCO, COCO_KEYPOINTS

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BOTTOMUP_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO_MINI = SHARED / "coco-mini"
needs_coco_mini = pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"shared data not found at {COCO_MINI}")
# Augmentation that only mirrors or does nothing: two datasets differing in `flip` draw the same random numbers.
NO_AFFINE = dict(rotation=0.0, scale=(1.0, 1.0), translate=0.0)
# pycocotools' RLE object predates numpy 2's __array__(copy=...) protocol; its annToMask still decodes right.
PYCOCOTOOLS_NUMPY2 = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class HeatmapCodec:
    """A stand-in for a method codec: stride-1 Gaussian heatmaps and the ignore mask."""

    def __init__(self, sigma: float = 2.0) -> None:
        self.sigma = sigma

    def encode(self, keypoints: torch.Tensor, input_size: tuple[int, int], mask: Any = None) -> dict[str, Any]:
        heat, _ = render_heatmaps(keypoints.reshape(-1, COCO.num_keypoints, 3), *input_size, self.sigma)
        return {"heatmaps": heat, "mask": downsample_mask(mask, input_size, 1)}


def coco_mini(split: str, **kwargs: Any) -> CocoKeypoints:
    return CocoKeypoints(COCO_MINI / "annotations" / f"person_keypoints_{split}2017.json",
                         COCO_MINI / f"{split}2017", **kwargs)


def category() -> dict[str, Any]:
    return {"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS), "skeleton": [[16, 14], [14, 12]]}


def person(ann_id: int, image_id: int, joints: dict[int, tuple[float, float]], **extra: Any) -> dict[str, Any]:
    kpts = [0.0] * 51
    for k, (x, y) in joints.items():
        kpts[3 * k:3 * k + 3] = [x, y, 2]
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "keypoints": kpts,
           "num_keypoints": len(joints), "bbox": [10.0, 10.0, 20.0, 30.0], "area": 600.0}
    ann.update(extra)
    return ann


def write_dataset(tmp_path: Path, annotations: list[dict[str, Any]], images: list[dict[str, Any]] | None = None,
                  write_images: bool = True, **top: Any) -> Path:
    """A COCO file (and plain grey JPEGs for its images) under ``tmp_path``; returns the JSON path."""
    images = images if images is not None else [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}]
    (tmp_path / "images").mkdir(exist_ok=True)
    if write_images:
        for img in images:
            cv2.imwrite(str(tmp_path / "images" / img["file_name"]),
                        np.full((img["height"], img["width"], 3), 128, np.uint8))
    data = {"images": images, "annotations": annotations, "categories": [category()], **top}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------------------------------------------------
# Geometry of the transforms


@pytest.mark.parametrize("seed", range(5))
def test_train_affine_round_trips_through_inverse(seed: int) -> None:
    rng = np.random.default_rng(seed)
    matrix, _ = train_matrix(300, 200, 128, Augmentation(), rng)
    points = np.concatenate([rng.uniform(0, 300, (20, 1)), rng.uniform(0, 200, (20, 1)), np.ones((20, 1))], 1)
    there = geometry.apply(matrix, points)
    back = geometry.apply(geometry.invert(matrix), there)
    np.testing.assert_allclose(back, points, atol=1e-9)


def test_train_matrix_without_randomness_centres_and_fits_the_image() -> None:
    matrix, flipped = train_matrix(300, 200, 128, Augmentation(**NO_AFFINE, flip=0.0), np.random.default_rng(0))
    assert not flipped
    np.testing.assert_allclose(geometry.apply(matrix, np.array([[149.5, 99.5]])), [[63.5, 63.5]])
    # Pixel edges of the longer side map onto the input's edges (pixel-centre convention).
    np.testing.assert_allclose(geometry.apply(matrix, np.array([[-0.5, 99.5], [299.5, 99.5]]))[:, 0], [-0.5, 127.5])


def test_warped_keypoints_map_back_to_the_image() -> None:
    image = np.zeros((100, 150, 3), np.uint8)
    kpts = np.zeros((1, 17, 3))
    kpts[0, :, :2] = np.random.default_rng(1).uniform(20, 80, (17, 2))
    kpts[0, :, 2] = 2
    mask = np.ones((100, 150), np.uint8)
    out = TrainTransform(96, COCO.flip_index, Augmentation(flip=0.0))(image, kpts, mask, np.random.default_rng(3))
    labelled = out.keypoints[0, :, 2] > 0
    back = geometry.apply(geometry.invert(out.matrix), out.keypoints)
    np.testing.assert_allclose(back[0, labelled, :2], kpts[0, labelled, :2], atol=1e-9)


def test_eval_transform_fits_centred_and_pads_with_mean_and_mask_one() -> None:
    image = np.full((50, 100, 3), 10, np.uint8)
    out = EvalTransform(64)(image, np.zeros((0, 17, 3)), np.zeros((50, 100), np.uint8))
    # 100 x 50 pixels scaled by 0.64 fill 64 x 32, centred: rows 16-47 show the image, 0-15 and 48-63 the padding.
    corners = geometry.apply(out.matrix, np.array([[[-0.5, -0.5, 2], [99.5, 49.5, 2]]]))[0, :, :2]
    np.testing.assert_allclose(corners, [[-0.5, 15.5], [63.5, 47.5]], atol=1e-9)
    assert (out.image[17:47] == 10).all()
    padding = normalize(out.image)[:, list(range(15)) + list(range(49, 64))]
    assert padding.abs().max() < 0.01  # the mean colour normalises to 0
    assert (out.mask[17:47] == 0).all() and (out.mask[:15] == 1).all() and (out.mask[49:] == 1).all()


@pytest.mark.parametrize("shape", [(50, 100), (120, 70), (64, 64)])
def test_eval_transform_places_the_image_where_unaugmented_training_does(shape) -> None:
    """A model trained without augmentation is evaluated on exactly the inputs it saw (a model that memorised 80
    coco-mini images scored AP 0.233 instead of 0.766 while evaluation anchored them top-left)."""
    h, w = shape
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    kpts = np.zeros((1, 17, 3))
    kpts[0, :, :2] = np.random.default_rng(1).uniform(0, min(h, w) - 1, (17, 2))
    kpts[0, :, 2] = 2
    mask = np.zeros((h, w), np.uint8)
    off = Augmentation(rotation=0.0, scale=(1.0, 1.0), translate=0.0, flip=0.0)
    trained = TrainTransform(96, COCO.flip_index, off)(image, kpts, mask, np.random.default_rng(3))
    evaluated = EvalTransform(96)(image, kpts, mask)
    np.testing.assert_array_equal(evaluated.matrix, trained.matrix)
    np.testing.assert_array_equal(evaluated.image, trained.image)
    np.testing.assert_array_equal(evaluated.keypoints, trained.keypoints)


def test_normalize_denormalize_round_trip() -> None:
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    x = normalize(image)
    assert x.shape == (3, 20, 30) and x.dtype == torch.float32
    np.testing.assert_array_equal(denormalize(x), image)
    np.testing.assert_array_equal(denormalize(x[None])[0], image)


@needs_coco_mini
def test_flip_mirrors_image_mask_and_swapped_targets() -> None:
    common = dict(input_size=128, codec=HeatmapCodec(), seed=7)
    plain = coco_mini("val", augmentation=Augmentation(**NO_AFFINE, flip=0.0), **common)
    mirrored = coco_mini("val", augmentation=Augmentation(**NO_AFFINE, flip=1.0), **common)
    index = plain.image_ids.index(217285)  # people and a crowd region
    a, b = plain[index], mirrored[index]
    flip = list(COCO.flip_index)
    assert a["targets"]["heatmaps"].amax() > 0.9
    torch.testing.assert_close(b["targets"]["heatmaps"], a["targets"]["heatmaps"][flip].flip(-1), atol=1e-5, rtol=0)
    assert (b["mask"] == a["mask"].flip(-1)).float().mean() > 0.99
    assert (b["image"] - a["image"].flip(-1)).abs().mean() < 0.02
    assert np.linalg.det(b["meta"]["matrix"].numpy()[:2, :2]) < 0 < np.linalg.det(a["meta"]["matrix"].numpy()[:2, :2])


# --------------------------------------------------------------------------------------------------------------------
# Masks


@needs_coco_mini
@PYCOCOTOOLS_NUMPY2
def test_mask_covers_crowd_regions() -> None:
    ds = coco_mini("val", input_size=128)
    index = ds.image_ids.index(217285)
    crowd = [a for a in ds.coco.imgToAnns[217285] if a["iscrowd"]]
    assert crowd
    mask = ds.ignore_mask(index)
    region = ds.coco.annToMask(crowd[0]).astype(bool)
    assert region.sum() > 1000
    assert mask[region].max() == 0
    assert mask[~region].mean() > 0.5
    sample = ds[index]
    assert sample["mask"].shape == (128, 128) and 0 < sample["mask"].float().mean() < 1


@needs_coco_mini
@PYCOCOTOOLS_NUMPY2
def test_mask_covers_people_without_keypoints() -> None:
    ds = coco_mini("val", input_size=128)
    ann = ds.coco.anns[426554]
    assert ann["num_keypoints"] == 0 and not ann["iscrowd"]
    mask = ds.ignore_mask(ds.image_ids.index(ann["image_id"]))
    assert mask[ds.coco.annToMask(ann).astype(bool)].max() == 0


def test_unlabelled_person_without_segmentation_is_masked_by_bbox(tmp_path: Path) -> None:
    ann = person(1, 1, {}, bbox=[10.0, 5.0, 20.0, 10.0], num_keypoints=0)
    ds = CocoKeypoints(write_dataset(tmp_path, [ann]), tmp_path / "images", input_size=64)
    mask = ds.ignore_mask(0)
    assert mask[5:15, 10:30].max() == 0 and mask.sum() == 64 * 48 - 200


def test_crowd_polygon_is_masked_and_crowd_is_no_person(tmp_path: Path) -> None:
    crowd = person(1, 1, {}, iscrowd=1, num_keypoints=0, segmentation=[[0, 0, 20, 0, 20, 20, 0, 20]])
    ds = CocoKeypoints(write_dataset(tmp_path, [crowd, person(2, 1, {0: (40.0, 30.0)})]), tmp_path / "images",
                       input_size=64)
    assert ds.ignore_mask(0)[2:18, 2:18].max() == 0
    assert ds.annotation(0).ann_ids.tolist() == [2]


# --------------------------------------------------------------------------------------------------------------------
# Determinism


@needs_coco_mini
def test_same_seed_same_sample_other_epoch_other_augmentation() -> None:
    a = coco_mini("train", input_size=128, augmentation=Augmentation(), seed=3)
    b = coco_mini("train", input_size=128, augmentation=Augmentation(), seed=3)
    first, again = a[5], b[5]
    torch.testing.assert_close(first["image"], again["image"], rtol=0, atol=0)
    torch.testing.assert_close(first["meta"]["matrix"], again["meta"]["matrix"], rtol=0, atol=0)
    b.set_epoch(1)
    assert not torch.equal(first["meta"]["matrix"], b[5]["meta"]["matrix"])
    c = coco_mini("train", input_size=128, augmentation=Augmentation(), seed=4)
    assert not torch.equal(first["meta"]["matrix"], c[5]["meta"]["matrix"])


@needs_coco_mini
def test_loader_is_deterministic_across_worker_counts_and_reshuffles_per_epoch() -> None:
    ds = coco_mini("train", input_size=64, augmentation=Augmentation(), seed=1)
    subset = torch.utils.data.Subset(ds, range(12))

    def batches(num_workers: int, epoch: int) -> list[dict[str, Any]]:
        loader = build_loader(subset, batch_size=4, shuffle=True, num_workers=num_workers, seed=5, epoch=epoch)
        return list(loader)

    serial, parallel = batches(0, 0), batches(2, 0)
    assert len(serial) == len(parallel) == 3
    for x, y in zip(serial, parallel):
        torch.testing.assert_close(x["image"], y["image"], rtol=0, atol=0)
        torch.testing.assert_close(x["meta"]["image_id"], y["meta"]["image_id"])
    later = batches(0, 1)
    assert [b["meta"]["image_id"].tolist() for b in later] != [b["meta"]["image_id"].tolist() for b in serial]


def test_set_epoch_reaches_the_dataset(tmp_path: Path) -> None:
    ds = CocoKeypoints(write_dataset(tmp_path, []), tmp_path / "images", input_size=32, augmentation=Augmentation())
    loader = build_loader(ds, batch_size=1, shuffle=False)
    loader.set_epoch(4)
    assert ds.epoch == 4 and loader.sampler.epoch == 4


def test_distributed_loader_needs_a_process_group(tmp_path: Path) -> None:
    ds = CocoKeypoints(write_dataset(tmp_path, []), tmp_path / "images", input_size=32)
    with pytest.raises(ConfigError, match="torch.distributed"):
        build_loader(ds, batch_size=2, shuffle=True, distributed=True)


# --------------------------------------------------------------------------------------------------------------------
# Refused input: the message names the file and the field or id


def _bad(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Write the broken annotation file of ``case``; returns (path, text the error must mention)."""
    path = tmp_path / "ann.json"
    good = [person(7, 1, {0: (5.0, 5.0)})]
    if case == "missing file":
        return tmp_path / "nope.json", "nope.json"
    if case == "invalid json":
        path.write_text('{"images": [')
        return path, "not valid JSON"
    if case == "not coco":
        path.write_text(json.dumps({"images": [], "categories": [category()]}))
        return path, "'annotations'"
    if case == "no keypoint category":
        no_keypoints = [{"id": 1, "name": "person"}]
        return write_dataset(tmp_path, good, write_images=False, categories=no_keypoints), "'keypoints'"
    if case == "wrong keypoint length":
        return write_dataset(tmp_path, [dict(good[0], keypoints=[1.0, 2.0, 2] * 16)], write_images=False), "id 7"
    if case == "nan keypoints":
        kpts = good[0]["keypoints"][:]
        kpts[0] = float("nan")
        return write_dataset(tmp_path, [dict(good[0], keypoints=kpts)], write_images=False), "NaN"
    if case == "unknown image id":
        return write_dataset(tmp_path, [dict(good[0], image_id=99)], write_images=False), "'image_id'"
    if case == "duplicate image id":
        images = [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}] * 2
        return write_dataset(tmp_path, good, images=images, write_images=False), "duplicate image id 1"
    if case == "duplicate annotation id":
        return write_dataset(tmp_path, good * 2, write_images=False), "duplicate annotation id 7"
    if case == "bad visibility":
        kpts = good[0]["keypoints"][:]
        kpts[2] = 3
        return write_dataset(tmp_path, [dict(good[0], keypoints=kpts)], write_images=False), "id 7"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing file", "invalid json", "not coco", "no keypoint category",
                                  "wrong keypoint length", "nan keypoints", "unknown image id", "duplicate image id",
                                  "duplicate annotation id", "bad visibility"])
def test_bad_annotation_file_raises_data_error_naming_file_and_field(tmp_path: Path, case: str) -> None:
    path, mention = _bad(tmp_path, case)
    with pytest.raises(DataError) as info:
        CocoKeypoints(path, tmp_path, input_size=32)
    message = str(info.value)
    assert str(path) in message and mention in message
    if case in ("wrong keypoint length", "nan keypoints", "bad visibility"):
        assert "'keypoints'" in message


def test_missing_image_file_names_the_path(tmp_path: Path) -> None:
    ds = CocoKeypoints(write_dataset(tmp_path, [], write_images=False), tmp_path / "images", input_size=32)
    with pytest.raises(DataError, match="a.jpg"):
        ds[0]


@pytest.mark.parametrize("content", [b"not an image at all", None])
def test_corrupt_image_file_names_the_path(tmp_path: Path, content: bytes | None) -> None:
    ds = CocoKeypoints(write_dataset(tmp_path, []), tmp_path / "images", input_size=32)
    path = tmp_path / "images" / "a.jpg"
    noisy = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    # None: a real JPEG cut in half (OpenCV 4 alone would decode it with a grey fill).
    jpeg = cv2.imencode(".jpg", noisy)[1].tobytes()
    data = content if content is not None else jpeg[:len(jpeg) // 2]
    path.write_bytes(data)
    with pytest.raises(DataError, match=str(path)):
        ds[0]


def test_image_of_wrong_size_is_refused(tmp_path: Path) -> None:
    ds = CocoKeypoints(write_dataset(tmp_path, []), tmp_path / "images", input_size=32)
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match="'width'/'height'"):
        ds[0]


def test_missing_image_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        CocoKeypoints(write_dataset(tmp_path, [], write_images=False), tmp_path / "nowhere", input_size=32)


# --------------------------------------------------------------------------------------------------------------------
# Repaired input


def test_fixable_oddities_are_repaired(tmp_path: Path) -> None:
    # Image 64x48: 10 % margins are 6.4 px in x and 4.8 px in y.
    slightly = person(1, 1, {0: (66.0, 20.0), 1: (10.0, -3.0), 2: (30.0, 30.0)})
    far = person(2, 1, {0: (90.0, 20.0), 1: (10.0, 10.0)})
    bare = person(3, 1, {0: (12.0, 13.0), 1: (14.0, 15.0)})
    del bare["num_keypoints"], bare["area"]
    with pytest.warns(UserWarning, match=r"1 labelled keypoints .*annotation ids \[2\]"):
        ds = CocoKeypoints(write_dataset(tmp_path, [slightly, far, bare]), tmp_path / "images", input_size=32)
    assert ds.file.clipped == 2 and ds.file.dropped == 1
    kpts = ds.annotation(0).keypoints
    np.testing.assert_allclose(kpts[0, :3], [[63.0, 20.0, 2], [10.0, 0.0, 2], [30.0, 30.0, 2]])
    np.testing.assert_allclose(kpts[1, :2], [[0.0, 0.0, 0], [10.0, 10.0, 2]])
    assert ds.coco.anns[2]["num_keypoints"] == 1
    assert ds.coco.anns[3]["num_keypoints"] == 2 and ds.coco.anns[3]["area"] == 600.0


def test_missing_bbox_comes_from_segmentation(tmp_path: Path) -> None:
    ann = person(1, 1, {0: (12.0, 13.0)}, segmentation=[[4, 6, 24, 6, 24, 16, 4, 16]])
    del ann["bbox"], ann["area"]
    ds = CocoKeypoints(write_dataset(tmp_path, [ann]), tmp_path / "images", input_size=32)
    box = ds.coco.anns[1]["bbox"]
    polygon = mask_utils.frPyObjects([[4, 6, 24, 6, 24, 16, 4, 16]], 48, 64)
    np.testing.assert_allclose(box, mask_utils.toBbox(polygon)[0])
    assert ds.coco.anns[1]["area"] == box[2] * box[3]


def test_missing_bbox_with_only_degenerate_polygons_comes_from_the_keypoints(tmp_path: Path) -> None:
    # A 4-number "polygon" is no region (pycocotools would read it as a box), so the keypoints give the box.
    ann = person(1, 1, {0: (12.0, 13.0), 5: (20.0, 30.0)}, segmentation=[[1, 2, 3, 4]])
    del ann["bbox"], ann["area"]
    ds = CocoKeypoints(write_dataset(tmp_path, [ann]), tmp_path / "images", input_size=32)
    assert ds.coco.anns[1]["bbox"] == [12.0, 13.0, 8.0, 17.0]


# --------------------------------------------------------------------------------------------------------------------
# Images and samples


@pytest.mark.parametrize("mode", ["gray", "rgba"])
def test_grayscale_and_rgba_images_load_as_rgb(tmp_path: Path, mode: str) -> None:
    path = write_dataset(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                         write_images=False)
    if mode == "gray":
        cv2.imwrite(str(tmp_path / "images" / "a.png"), np.full((48, 64), 77, np.uint8))
        want = [77, 77, 77]
    else:
        cv2.imwrite(str(tmp_path / "images" / "a.png"), np.full((48, 64, 4), (10, 20, 30, 40), np.uint8))  # BGRA
        want = [30, 20, 10]
    ds = CocoKeypoints(path, tmp_path / "images", input_size=32)
    image = ds.load_image(0)
    assert image.shape == (48, 64, 3) and image[5, 5].tolist() == want
    assert ds[0]["image"].shape == (3, 32, 32)


def test_zero_people_image_gives_zero_targets(tmp_path: Path) -> None:
    ds = CocoKeypoints(write_dataset(tmp_path, []), tmp_path / "images", input_size=32, codec=HeatmapCodec(),
                       augmentation=Augmentation())
    sample = ds[0]
    assert sample["targets"]["heatmaps"].shape == (17, 32, 32) and sample["targets"]["heatmaps"].abs().sum() == 0
    assert sample["mask"].min() == 1
    assert ds.annotation(0).keypoints.shape == (0, 17, 3)
    batch = torch.utils.data.default_collate([sample, sample])
    assert batch["meta"]["matrix"].shape == (2, 3, 3) and batch["meta"]["matrix"].dtype == torch.float64


@needs_coco_mini
@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_mini_loads_every_image(split: str) -> None:
    ds = coco_mini(split, input_size=64, codec=HeatmapCodec())
    assert ds.skeleton is COCO and len(ds) == len(ds.coco.imgs)
    people = 0
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["image"].shape == (3, 64, 64) and torch.isfinite(sample["image"]).all()
        assert sample["meta"]["orig_size"].tolist() == [ds.image_info(i)["width"], ds.image_info(i)["height"]]
        people += len(ds.annotation(i).keypoints)
    assert people > 20


@needs_coco_mini
def test_annotation_keypoints_are_the_files_and_the_matrix_maps_them_into_targets() -> None:
    ds = coco_mini("val", input_size=128, codec=HeatmapCodec(sigma=1.0))
    index = next(i for i in range(len(ds)) if len(ds.annotation(i).keypoints))
    ann = ds.annotation(index)
    np.testing.assert_array_equal(ann.keypoints[0].ravel(), ds.coco.anns[int(ann.ann_ids[0])]["keypoints"])
    sample = ds[index]
    joint = int(np.flatnonzero(ann.keypoints[0, :, 2] > 0)[0])
    x, y = geometry.apply(sample["meta"]["matrix"].numpy(), ann.keypoints[0, joint, :2])
    assert sample["targets"]["heatmaps"][joint, int(round(y)), int(round(x))] > 0.5


def test_read_image_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")


# --------------------------------------------------------------------------------------------------------------------
# Configs


@needs_coco_mini
def test_coco_mini_config_builds_both_splits() -> None:
    cfg = load_group("data", "coco_mini")
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert isinstance(train.transform, TrainTransform) and isinstance(val.transform, EvalTransform)
    assert train.input_size == 256 and len(train) == 80 and len(val) == 79


@pytest.mark.parametrize("name", ["coco", "crowdpose"])
def test_configs_without_root_ask_for_it(name: str) -> None:
    with pytest.raises(ConfigError, match="data.root="):
        build_dataset(load_group("data", name), "train")


def test_every_data_config_has_the_keys_the_builder_reads() -> None:
    for name in ("synthetic", "coco", "coco_mini", "crowdpose"):
        cfg = load_group("data", name)
        assert set(cfg) >= {"name", "kind", "root", "train", "val", "input_size", "augment"}
        Augmentation.from_config(cfg.augment)
