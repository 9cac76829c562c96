"""Official COCO keypoint evaluation (pycocotools COCOeval), with the cases it does not handle made safe.

- No detections at all: pycocotools' ``loadRes`` fails on an empty list; we return AP 0 instead.
- Any skeleton: OKS sigmas come from the skeleton, not COCO's built-in 17.
- AP broken down by the number of annotated people in the image (crowd buckets), and by how close they stand.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO as CocoApi
from pycocotools.cocoeval import COCOeval

from bottomup import geometry
from bottomup.data.coco import KeypointFile, coco_index, load_keypoint_file
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton

METRIC_NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")
CROWD_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 1), (2, 3), (4, 7), (8, None))
# Images of two or more people: "close" when someone's nearest neighbour stands within geometry.CLOSE_NEIGHBOUR_GAP of
# their size, else "apart".
CLOSENESS_BUCKETS = ("apart", "close")


def bucket_name(lo: int, hi: int | None) -> str:
    return f"{lo}" if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}")


def bucket_of(count: int) -> str | None:
    """Crowd bucket name for an image with ``count`` people (``None`` for 0)."""
    for lo, hi in CROWD_BUCKETS:
        if count >= lo and (hi is None or count <= hi):
            return bucket_name(lo, hi)
    return None


def poses_to_results(image_id: int, poses: Poses, category_id: int) -> list[dict]:
    """COCO results entries for one image's poses (already in original image pixels), in the keypoint category
    ``category_id`` of the annotation file: COCOeval matches nothing of another category."""
    kpts = poses.keypoints.detach().cpu().numpy().astype(np.float64)
    scores = poses.scores.detach().cpu().numpy().astype(np.float64)
    return [{"image_id": int(image_id), "category_id": int(category_id),
             "keypoints": [round(float(v), 3) for v in kpts[i].reshape(-1)], "score": float(scores[i])}
            for i in range(len(scores))]


def _people(coco: CocoApi, image_id: int) -> list[dict]:
    """The image's annotated people: not crowd, ``num_keypoints > 0``."""
    return [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False)) if a.get("num_keypoints", 0) > 0]


def people_per_image(coco: CocoApi, image_ids: Iterable[int]) -> dict[int, int]:
    """Annotated people (not crowd, at least one keypoint) per image."""
    return {image_id: len(_people(coco, image_id)) for image_id in image_ids}


def closeness_per_image(coco: CocoApi, image_ids: Iterable[int]) -> dict[int, str | None]:
    """``{image id: "apart" | "close" | None}``: ``None`` for images with fewer than two annotated people (not crowd)
    with a labelled keypoint (``v > 0``), ``close`` when one of them has a neighbour whose centre lies within
    :data:`~bottomup.geometry.CLOSE_NEIGHBOUR_GAP` times the person's size (centre: mean of the labelled keypoints;
    size: longer side of their box), ``apart`` otherwise."""
    out: dict[int, str | None] = {}
    for image_id in image_ids:
        gaps = geometry.annotated_gaps([a["keypoints"] for a in _people(coco, image_id)])
        out[image_id] = None if not len(gaps) else "close" if (gaps < geometry.CLOSE_NEIGHBOUR_GAP).any() else "apart"
    return out


def evaluate(coco: CocoApi, results: Sequence[dict], sigmas: Sequence[float],
             image_ids: Sequence[int] | None = None, verbose: bool = False) -> dict[str, float]:
    """COCO keypoint metrics (``METRIC_NAMES``) of ``results`` against ``coco``.

    ``image_ids`` restricts evaluation (default: every image of ``coco``). With no results at all every metric is 0.
    ``verbose`` prints pycocotools' standard table.
    """
    ids = sorted(coco.getImgIds()) if image_ids is None else sorted(int(i) for i in image_ids)
    ids_set = set(ids)
    results = [r for r in results if r["image_id"] in ids_set]
    if not results or not ids:
        return {name: 0.0 for name in METRIC_NAMES}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        detections = coco.loadRes(copy.deepcopy(list(results)))
        evaluator = COCOeval(coco, detections, iouType="keypoints")
        evaluator.params.imgIds = ids
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if verbose:
        print(_table(sink.getvalue()))
    stats = np.maximum(evaluator.stats, 0.0)
    return {name: float(v) for name, v in zip(METRIC_NAMES, stats)}


def _table(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if line.lstrip().startswith("Average"))


def evaluate_by_crowd(coco: CocoApi, results: Sequence[dict], sigmas: Sequence[float],
                      image_ids: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{bucket: {"AP": ..., "images": n}}`` for the crowd buckets 1, 2-3, 4-7, 8+ people per image."""
    buckets = {i: bucket_of(count) for i, count in people_per_image(coco, image_ids).items()}
    return _evaluate_buckets(coco, results, sigmas, buckets, [bucket_name(lo, hi) for lo, hi in CROWD_BUCKETS])


def evaluate_by_closeness(coco: CocoApi, results: Sequence[dict], sigmas: Sequence[float],
                          image_ids: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{"apart" | "close": {"AP": ..., "images": n}}`` over the images of two or more people
    (:func:`closeness_per_image`): where grouping has overlapping people to separate, and where it has not."""
    return _evaluate_buckets(coco, results, sigmas, closeness_per_image(coco, image_ids), CLOSENESS_BUCKETS)


def _evaluate_buckets(coco: CocoApi, results: Sequence[dict], sigmas: Sequence[float],
                      bucket_of_image: dict[int, str | None], names: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{name: {"AP": ..., "images": n}}`` over the images in each named bucket; empty buckets are left out."""
    out = {}
    for name in names:
        ids = [i for i, bucket in bucket_of_image.items() if bucket == name]
        if ids:
            out[name] = {"AP": evaluate(coco, results, sigmas, ids)["AP"], "images": len(ids)}
    return out


@dataclass
class Annotations:
    """A validated keypoint annotation file and its pycocotools index (what COCOeval scores against)."""

    file: KeypointFile
    coco: CocoApi

    @property
    def skeleton(self) -> Skeleton:
        return self.file.skeleton


def load_annotations(path: str | Path) -> Annotations:
    """Read and check a COCO-format keypoint file (:func:`bottomup.data.coco.load_keypoint_file`) and index it."""
    file = load_keypoint_file(path)
    return Annotations(file, coco_index(file.dataset))
