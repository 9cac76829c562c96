"""COCO-format keypoint datasets (COCO, CrowdPose, the synthetic set, any file in that format) via pycocotools.

:func:`load_keypoint_file` reads an annotation file, refuses what cannot be trusted with a :class:`DataError` that
names the file and the field or id at fault, and repairs what can be repaired:

* a labelled keypoint outside the image area ``[-0.5, W - 0.5) x [-0.5, H - 0.5)`` by at most ``clip_margin``
  (default 10 %) of the image width (x) or height (y) is clipped onto the nearest border pixel centre (annotators
  click a little past the edge); one farther out is marked unlabelled (``v = 0``) and counted in a single warning
  per file;
* ``num_keypoints`` is recomputed from the (repaired) keypoints, so people whose joints were all dropped count as
  unlabelled; a missing ``area`` is taken from the bbox, a missing ``bbox`` from the segmentation or the keypoints,
  a missing ``iscrowd`` is 0.

:class:`CocoKeypoints` turns the file and its images into training/evaluation samples. Its ignore mask (1 = use,
0 = ignore) is 0 over crowd regions and over people with no labelled keypoint (their segmentation, their bbox if
they have none), as in Associative Embedding and HigherHRNet, so the loss never punishes a response on a person
nobody labelled.

Keypoints are in image pixels with pixel centres at integer coordinates (:mod:`bottomup.geometry`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from bottomup.data.transforms import Augmentation, EvalTransform, Transform, TrainTransform, normalize
from bottomup.errors import DataError
from bottomup.methods.base import Codec
from bottomup.skeletons import Skeleton

# How far outside its image a labelled keypoint may lie, as a fraction of the image width (x) or height (y), and
# still be clipped into the image rather than dropped.
CLIP_MARGIN = 0.1
# How many annotation ids a warning lists before it only counts.
_LIST_IDS = 5


@dataclass
class KeypointFile:
    """A validated, repaired COCO keypoint file.

    Attributes:
        path: the annotation file.
        dataset: the COCO dict, restricted to the keypoint category's annotations, with repairs applied.
        category: the keypoint category entry.
        skeleton: the layout that category describes.
        clipped: labelled keypoints that were slightly outside their image and got clipped into it.
        dropped: labelled keypoints that were far outside their image and got marked unlabelled.
    """

    path: Path
    dataset: dict[str, Any]
    category: dict[str, Any]
    skeleton: Skeleton
    clipped: int = 0
    dropped: int = 0


@dataclass
class ImageAnnotation:
    """The labelled people of one image, in image pixels (for evaluation and oracle studies).

    Attributes:
        image_id: the COCO image id.
        path: the image file.
        size: ``(width, height)``.
        keypoints: ``[N, K, 3]`` float64 (x, y, v) of the non-crowd people with at least one labelled joint.
        ann_ids: ``[N]`` their annotation ids.
        bboxes: ``[N, 4]`` their ``(x, y, w, h)`` boxes.
        areas: ``[N]`` their areas (what COCO's OKS divides by).
    """

    image_id: int
    path: Path
    size: tuple[int, int]
    keypoints: np.ndarray
    ann_ids: np.ndarray
    bboxes: np.ndarray
    areas: np.ndarray


def load_keypoint_file(path: str | Path, category_id: int | None = None,
                       clip_margin: float = CLIP_MARGIN) -> KeypointFile:
    """Read, validate and repair a COCO-format keypoint annotation file (see the module docstring).

    Args:
        path: the JSON file.
        category_id: which keypoint category to use; ``None`` picks the only one (or the one named ``person``).
        clip_margin: fraction of the image size within which out-of-image keypoints are clipped, not dropped.
    Raises:
        DataError: naming the file and the offending field or id.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist (or is not a file). Check the dataset root and the "
                        f"annotation path in the data config.")
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation file {path} is not valid JSON: {exc}. The file is probably truncated or not "
                        f"an annotation file; re-download or regenerate it.") from None
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} is not in COCO format: the top level is a "
                        f"{type(data).__name__}, expected an object with 'images', 'annotations' and 'categories'.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"annotation file {path} is not in COCO format: field {key!r} is "
                            f"{'missing' if key not in data else 'not a list'}; a COCO keypoint file has lists "
                            f"'images', 'annotations' and 'categories'.")
    category = _keypoint_category(path, data["categories"], category_id)
    try:
        skeleton = Skeleton.from_coco_category(category)
    except ValueError as exc:
        raise DataError(f"annotation file {path}: category id {category.get('id')} does not describe a valid "
                        f"skeleton in its 'keypoints'/'skeleton' fields: {exc}") from None
    images = _check_images(path, data["images"])
    repair = _Repair(path, images, category, skeleton.num_keypoints, clip_margin)
    annotations = [repair(ann) for ann in _category_annotations(path, data["annotations"], category,
                                                                 len(data["categories"]))]
    if repair.dropped:
        more = " ..." if len(repair.dropped_ids) > _LIST_IDS else ""
        warnings.warn(f"annotation file {path}: {repair.dropped} labelled keypoints lie more than "
                      f"{clip_margin:.0%} of the image size outside their image and were marked unlabelled "
                      f"(annotation ids {repair.dropped_ids[:_LIST_IDS]}{more}).", stacklevel=2)
    dataset = {"info": data.get("info", {}), "images": list(images.values()), "annotations": annotations,
               "categories": [category]}
    return KeypointFile(path, dataset, category, skeleton, repair.clipped, repair.dropped)


def _keypoint_category(path: Path, categories: list[Any], category_id: int | None) -> dict[str, Any]:
    candidates = [c for c in categories if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    if category_id is not None:
        candidates = [c for c in candidates if c.get("id") == category_id]
        if not candidates:
            raise DataError(f"annotation file {path}: no entry of 'categories' has id {category_id} and a "
                            f"'keypoints' list.")
    if not candidates:
        raise DataError(f"annotation file {path}: no entry of 'categories' has a 'keypoints' field, so the file "
                        f"holds no keypoint annotations (is it an instances_*.json rather than person_keypoints_*?).")
    if len(candidates) > 1:
        people = [c for c in candidates if c.get("name") == "person"]
        if len(people) != 1:
            raise DataError(f"annotation file {path}: several 'categories' have keypoints (ids "
                            f"{[c.get('id') for c in candidates]}); pass category_id to choose one.")
        candidates = people
    return candidates[0]


def _check_images(path: Path, images: list[Any]) -> dict[int, dict[str, Any]]:
    by_id: dict[int, dict[str, Any]] = {}
    for i, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("id"), int):
            raise DataError(f"annotation file {path}: images[{i}] has no integer 'id'.")
        image_id = image["id"]
        if image_id in by_id:
            raise DataError(f"annotation file {path}: duplicate image id {image_id} in 'images'; image ids must be "
                            f"unique.")
        if not isinstance(image.get("file_name"), str):
            raise DataError(f"annotation file {path}: image id {image_id} has no 'file_name' string.")
        for key in ("width", "height"):
            if not (isinstance(image.get(key), int) and image[key] > 0):
                raise DataError(f"annotation file {path}: image id {image_id} has {key!r} = {image.get(key)!r}, "
                                f"expected a positive integer.")
        by_id[image_id] = image
    return by_id


def _category_annotations(path: Path, annotations: list[Any], category: dict[str, Any],
                          num_categories: int) -> Iterator[dict[str, Any]]:
    """The annotations of ``category``, after checking that every annotation id is unique."""
    seen: set[int] = set()
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
            raise DataError(f"annotation file {path}: annotations[{i}] has no integer 'id'.")
        if ann["id"] in seen:
            raise DataError(f"annotation file {path}: duplicate annotation id {ann['id']} in 'annotations'; "
                            f"annotation ids must be unique.")
        seen.add(ann["id"])
        if "category_id" not in ann and num_categories > 1:
            raise DataError(f"annotation file {path}: annotation id {ann['id']} has no 'category_id' and the file "
                            f"has {num_categories} categories.")
        if ann.get("category_id", category["id"]) == category["id"]:
            yield ann


class _Repair:
    """Checks one annotation of the keypoint category and returns a repaired copy (see the module docstring)."""

    def __init__(self, path: Path, images: dict[int, dict[str, Any]], category: dict[str, Any],
                 num_keypoints: int, clip_margin: float) -> None:
        self.path = path
        self.images = images
        self.category = category
        self.k = num_keypoints
        self.clip_margin = float(clip_margin)
        self.clipped = 0
        self.dropped = 0
        self.dropped_ids: list[int] = []

    def error(self, ann: dict[str, Any], field: str, problem: str) -> DataError:
        return DataError(f"annotation file {self.path}: annotation id {ann['id']} field {field!r} {problem}")

    def __call__(self, ann: dict[str, Any]) -> dict[str, Any]:
        image = self.images.get(ann.get("image_id"))  # type: ignore[arg-type]
        if image is None:
            raise self.error(ann, "image_id", f"is {ann.get('image_id')!r}, which is not an id in 'images'.")
        out = dict(ann, category_id=self.category["id"], iscrowd=int(ann.get("iscrowd", 0) or 0))
        kpts = self.keypoints(ann, image["width"], image["height"])
        out["keypoints"] = [float(v) for v in kpts.ravel()]
        out["num_keypoints"] = int((kpts[:, 2] > 0).sum())
        self.check_segmentation(ann)
        out["bbox"] = self.bbox(ann, kpts, image)
        if "area" not in ann:
            out["area"] = float(out["bbox"][2] * out["bbox"][3])
        return out

    def keypoints(self, ann: dict[str, Any], width: int, height: int) -> np.ndarray:
        raw = ann.get("keypoints")
        if raw is None:
            return np.zeros((self.k, 3))
        try:
            kpts = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise self.error(ann, "keypoints", "is not a flat list of numbers.") from None
        if kpts.ndim != 1 or kpts.size != 3 * self.k:
            raise self.error(ann, "keypoints", f"has {kpts.size} values; the skeleton has {self.k} keypoints, so "
                                               f"it needs {3 * self.k} (x, y, v per keypoint).")
        kpts = kpts.reshape(self.k, 3)
        if not np.isfinite(kpts).all():
            bad = int(np.flatnonzero(~np.isfinite(kpts).all(1))[0])
            raise self.error(ann, "keypoints", f"holds NaN or infinite values (keypoint {bad}).")
        if not np.isin(kpts[:, 2], (0, 1, 2)).all():
            raise self.error(ann, "keypoints", f"has visibility flags {sorted(set(kpts[:, 2].tolist()))}; COCO "
                                               f"allows 0 (unlabelled), 1 (occluded) and 2 (visible).")
        kpts[kpts[:, 2] == 0] = 0.0
        return self.clip(ann, kpts, width, height)

    def clip(self, ann: dict[str, Any], kpts: np.ndarray, width: int, height: int) -> np.ndarray:
        # The image area is [-0.5, size - 0.5) (pixel centres at integers); a slightly-outside joint moves onto the
        # nearest border pixel centre.
        labelled = kpts[:, 2] > 0
        size = np.array([width, height], dtype=np.float64)
        margin = self.clip_margin * size
        xy = kpts[:, :2]
        outside = labelled & ((xy < -0.5) | (xy >= size - 0.5)).any(1)
        far = labelled & ((xy < -0.5 - margin) | (xy >= size - 0.5 + margin)).any(1)
        near = outside & ~far
        self.clipped += int(near.sum())
        kpts[near, :2] = np.clip(xy[near], 0, size - 1)
        if far.any():
            self.dropped += int(far.sum())
            self.dropped_ids.append(ann["id"])
            kpts[far] = 0.0
        return kpts

    def check_segmentation(self, ann: dict[str, Any]) -> None:
        segm = ann.get("segmentation")
        if segm is None or segm == []:
            return
        if isinstance(segm, dict):
            if "counts" not in segm or "size" not in segm:
                raise self.error(ann, "segmentation", "is an RLE without 'counts' and 'size'.")
            return
        if not (isinstance(segm, list) and all(isinstance(p, list) for p in segm)):
            raise self.error(ann, "segmentation", "must be a list of polygons or an RLE object.")

    def bbox(self, ann: dict[str, Any], kpts: np.ndarray, image: dict[str, Any]) -> list[float]:
        if "bbox" in ann:
            try:
                box = np.asarray(ann["bbox"], dtype=np.float64)
            except (TypeError, ValueError):
                raise self.error(ann, "bbox", "is not a list of 4 numbers.") from None
            if box.shape != (4,) or not np.isfinite(box).all():
                raise self.error(ann, "bbox", f"is {ann['bbox']!r}, expected 4 finite numbers (x, y, w, h).")
            return box.tolist()
        rle = _segmentation_rle(ann, image["height"], image["width"]) if ann.get("segmentation") else None
        if rle is not None:
            return mask_utils.toBbox(rle).tolist()
        labelled = kpts[kpts[:, 2] > 0, :2]
        if len(labelled):
            x0, y0 = labelled.min(0)
            x1, y1 = labelled.max(0)
            return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
        raise self.error(ann, "bbox", "is missing and the annotation has neither a segmentation nor labelled "
                                      "keypoints to derive it from.")


def _segmentation_rle(ann: dict[str, Any], height: int, width: int) -> dict[str, Any] | None:
    """One RLE for an annotation's segmentation (polygons, compressed or uncompressed RLE); ``None`` if it has none.

    Polygons with fewer than 3 points are skipped: pycocotools would read a 4-number polygon as a box.
    """
    segm = ann.get("segmentation")
    if isinstance(segm, dict):
        return mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
    polygons = [p for p in (segm or []) if len(p) >= 6]
    if not polygons:
        return None
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def region_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """``[H, W]`` bool: the pixels an annotation covers (its segmentation, else its bbox)."""
    rle = _segmentation_rle(ann, height, width)
    if rle is not None:
        with warnings.catch_warnings():
            # pycocotools' RLE object predates numpy 2's __array__(copy=...) protocol; the decode itself is fine.
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)
    x, y, w, h = ann["bbox"]
    region = np.zeros((height, width), dtype=bool)
    region[max(0, math.floor(y)):max(0, math.ceil(y + h)), max(0, math.floor(x)):max(0, math.ceil(x + w))] = True
    return region


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB (grayscale and RGBA are converted; EXIF orientation ignored).

    EXIF orientation is ignored because COCO's annotations refer to the stored pixel grid (as HigherHRNet reads it).

    Args:
        size: the ``(width, height)`` the annotations expect; a mismatch raises.
    Raises:
        DataError: the file is missing, cannot be decoded, looks truncated, or has the wrong size.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"image {path} cannot be read ({exc.strerror or exc}). Check the dataset's image "
                        f"folder.") from None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    # OpenCV 4 decodes a truncated JPEG with a grey fill and only a console warning: refuse a JPEG whose last
    # end-of-image marker is not near the end of the file.
    truncated = data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < len(data) - 4096
    if image is None or image.size == 0 or truncated:
        raise DataError(f"image {path} is corrupt or not an image file ({len(data)} bytes could not be decoded"
                        f"{' completely: the JPEG is truncated' if truncated and image is not None else ''}).")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size is not None and (image.shape[1], image.shape[0]) != tuple(size):
        raise DataError(f"image {path} is {image.shape[1]}x{image.shape[0]} pixels but its annotation says "
                        f"{size[0]}x{size[1]} ('width'/'height'); the image does not belong to this annotation "
                        f"file.")
    return image


def coco_index(dataset: dict) -> COCO:
    """pycocotools' COCO index of an annotation dict, without its progress prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoKeypoints(Dataset):
    """A COCO-format keypoint dataset producing network samples.

    ``dataset[i]`` is a dict of tensors (``torch.utils.data.default_collate`` stacks them):

    * ``"image"``: ``[3, S, S]`` float32, ImageNet-normalised RGB (``S = input_size``);
    * ``"mask"``: ``[S, S]`` uint8 ignore mask at input resolution (1 = use, 0 = ignore);
    * ``"targets"``: ``codec.encode(keypoints, (S, S), mask)`` (only when a codec is given);
    * ``"meta"``: ``{"image_id": int64 [], "matrix": float64 [3, 3] image -> input, "orig_size": int64 [2] (w, h)}``.

    Training augmentation (``augmentation`` given) draws from a generator seeded by ``(seed, epoch, index)``, so a
    sample is reproducible whatever the worker or process that builds it; :meth:`set_epoch` changes the draw.
    Without ``augmentation`` the image is fitted into the input, centred (:class:`EvalTransform`).

    Args:
        annotation_file: a COCO-format keypoint JSON file.
        image_dir: folder holding the images' ``file_name``.
        input_size: side ``S`` of the square network input.
        codec: the method's codec; ``None`` gives samples without targets.
        augmentation: the random training affine; ``None`` for evaluation.
        seed: base seed of the augmentation.
        clip_margin: see :data:`CLIP_MARGIN`.
        skip_empty: leave out images without a labelled person (a training-time saving on COCO).
        category_id: the keypoint category to read (``None``: the file's only / ``person`` one).
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, input_size: int = 512,
                 codec: Codec | None = None, augmentation: Augmentation | None = None, seed: int = 0,
                 clip_margin: float = CLIP_MARGIN, skip_empty: bool = False, category_id: int | None = None) -> None:
        self.file = load_keypoint_file(annotation_file, category_id, clip_margin)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataError(f"image folder {self.image_dir} (for annotation file {self.file.path}) does not exist.")
        self.skeleton = self.file.skeleton
        self.coco = coco_index(self.file.dataset)
        self.input_size = int(input_size)
        self.codec = codec
        self.seed = int(seed)
        self.epoch = 0
        self.transform: Transform = (TrainTransform(self.input_size, self.skeleton.flip_index, augmentation)
                                     if augmentation is not None else EvalTransform(self.input_size))
        ids = sorted(self.coco.imgs)
        if skip_empty:
            ids = [i for i in ids if any(self._is_person(a) for a in self.coco.imgToAnns.get(i, []))]
        self.image_ids: list[int] = ids

    @staticmethod
    def _is_person(ann: dict[str, Any]) -> bool:
        return not ann["iscrowd"] and ann["num_keypoints"] > 0

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (the loader calls this before each epoch)."""
        self.epoch = int(epoch)

    def image_info(self, index: int) -> dict[str, Any]:
        return self.coco.imgs[self.image_ids[index]]

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.image_info(index)["file_name"]

    def load_image(self, index: int) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB image ``index``."""
        info = self.image_info(index)
        return read_image(self.image_path(index), (info["width"], info["height"]))

    def annotation(self, index: int) -> ImageAnnotation:
        """The labelled, non-crowd people of image ``index`` in image pixels."""
        info = self.image_info(index)
        anns = [a for a in self.coco.imgToAnns.get(info["id"], []) if self._is_person(a)]
        k = self.skeleton.num_keypoints
        return ImageAnnotation(
            image_id=info["id"], path=self.image_path(index), size=(info["width"], info["height"]),
            keypoints=np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), k, 3),
            ann_ids=np.array([a["id"] for a in anns], dtype=np.int64),
            bboxes=np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(len(anns), 4),
            areas=np.array([a["area"] for a in anns], dtype=np.float64))

    def ignore_mask(self, index: int) -> np.ndarray:
        """``[H, W]`` uint8 at image resolution: 0 over crowd regions and people without labelled keypoints."""
        info = self.image_info(index)
        height, width = info["height"], info["width"]
        mask = np.ones((height, width), dtype=np.uint8)
        for ann in self.coco.imgToAnns.get(info["id"], []):
            if ann["iscrowd"] or ann["num_keypoints"] == 0:
                mask[region_mask(ann, height, width)] = 0
        return mask

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of sample ``index`` at the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        ann = self.annotation(index)
        warped = self.transform(self.load_image(index), ann.keypoints, self.ignore_mask(index), self.rng(index))
        # People whose every joint left the input carry no target.
        keypoints = warped.keypoints[(warped.keypoints[..., 2] > 0).any(-1)]
        sample: dict[str, Any] = {
            "image": normalize(warped.image),
            "mask": torch.from_numpy(warped.mask),
            "meta": {
                "image_id": torch.tensor(ann.image_id, dtype=torch.int64),
                "matrix": torch.from_numpy(warped.matrix),
                "orig_size": torch.tensor(ann.size, dtype=torch.int64),
            },
        }
        if self.codec is not None:
            size = (self.input_size, self.input_size)
            sample["targets"] = self.codec.encode(torch.from_numpy(keypoints).float(), size,
                                                  warped.mask.astype(np.float32))
        return sample
