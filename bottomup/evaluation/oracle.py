"""The oracle grouping benchmark: ideal maps rendered from real annotations, decoded and scored with COCOeval.

It isolates grouping from learning: each method's codec renders what a perfect head would output for the annotated
people, optionally degraded, and its decoder turns those maps back into poses. What is lost is lost by the
representation and the decoder alone -- peak collisions, crossing limbs, root collisions.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from typing import Mapping, Sequence

import numpy as np
import torch

from bottomup import geometry
from bottomup.evaluation import coco_eval
from bottomup.evaluation.degrade import Degradation
from bottomup.evaluation.report import METRICS
from bottomup.methods.base import Codec
from bottomup.poses import Poses


def image_people(coco, image_id: int) -> np.ndarray:
    """``[N, K, 3]`` keypoints of the annotated (not crowd, at least one keypoint) people of an image."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False))
    kpts = [a["keypoints"] for a in anns if a.get("num_keypoints", 0) > 0]
    k = len(coco.loadCats(coco.getCatIds())[0]["keypoints"])
    return np.asarray(kpts, dtype=np.float32).reshape(-1, k, 3)


def ideal_image_outputs(codec: Codec, people: np.ndarray, image_size: tuple[int, int], input_size: int = 512,
                        degradation: Degradation = Degradation(), seed: int = 0,
                        image_id: int = 0) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """``codec``'s ideal (optionally degraded) outputs for one image's ``people``, as a batch of one, and the image
    -> input matrix.

    ``people [N, K, 3]`` are in the pixels of an image of ``image_size = (width, height)``, which is scaled to fit
    ``input_size`` (aspect kept, centred on a square canvas).
    """
    to_input, _ = geometry.fit_into(image_size[0], image_size[1], input_size)
    kpts = degradation.people(geometry.apply(to_input, people), codec.stride, seed, image_id)
    outputs = codec.ideal_outputs(kpts, (input_size, input_size))
    if degradation.active:
        outputs = degradation.maps(outputs, codec.outputs, seed, image_id)
    return {k: v[None] for k, v in outputs.items()}, to_input


def oracle_poses(codec: Codec, people: np.ndarray, image_size: tuple[int, int], input_size: int = 512,
                 degradation: Degradation = Degradation(), seed: int = 0, image_id: int = 0) -> tuple[Poses, float]:
    """What ``codec`` decodes from the ideal (optionally degraded) outputs of one image's ``people`` (see
    :func:`ideal_image_outputs`). Returns the decoded poses in image pixels and the wall time of the decode call in
    seconds.
    """
    batch, to_input = ideal_image_outputs(codec, people, image_size, input_size, degradation, seed, image_id)
    start = time.perf_counter()
    poses = codec.decode(batch)[0]
    seconds = time.perf_counter() - start
    return poses.affine(torch.as_tensor(geometry.invert(to_input)[:2])), seconds


def run_oracle(annotations: coco_eval.Annotations, codecs: Mapping[str, Codec], input_size: int = 512,
               degradation: Degradation = Degradation(), seed: int = 0, progress: bool = False,
               image_ids: Sequence[int] | None = None) -> dict:
    """Oracle AP of every codec on every image with annotated people (of ``image_ids`` only, when given).

    Each image is scaled to fit ``input_size`` (aspect kept, centred on a square canvas), each method's ideal
    outputs are rendered (and degraded), decoded, mapped back to the image and scored.

    Returns ``{"config": {...}, "results": {method: {AP, AP50, AP75, APM, APL, AR, images, people,
    decode_ms_per_image, by_people: {bucket: {AP, images, decode_ms}}, by_closeness: {bucket: {AP, images}}}}}``
    (:func:`~bottomup.evaluation.coco_eval.evaluate_by_closeness`); ``decode_ms_per_image`` is the median wall time of
    one image's decode call.
    """
    coco = annotations.coco
    sigmas = annotations.skeleton.sigmas
    selected = sorted(coco.getImgIds()) if image_ids is None else sorted(int(i) for i in image_ids)
    people = {i: image_people(coco, i) for i in selected}
    category_id = annotations.file.category["id"]
    image_ids = [i for i, p in people.items() if len(p)]
    results: dict[str, list[dict]] = {name: [] for name in codecs}
    times: dict[str, dict[int, float]] = {name: {} for name in codecs}
    for n, image_id in enumerate(image_ids):
        info = coco.loadImgs([image_id])[0]
        for name, codec in codecs.items():
            poses, times[name][image_id] = oracle_poses(codec, people[image_id], (info["width"], info["height"]),
                                                        input_size, degradation, seed, image_id)
            results[name] += coco_eval.poses_to_results(image_id, poses, category_id)
        if progress and (n + 1) % 50 == 0:
            print(f"  {n + 1}/{len(image_ids)} images", flush=True)
    counts = {i: len(people[i]) for i in image_ids}
    report = {}
    for name in codecs:
        metrics = coco_eval.evaluate(coco, results[name], sigmas, image_ids)
        by_people = coco_eval.evaluate_by_crowd(coco, results[name], sigmas, image_ids)
        for bucket, entry in by_people.items():
            entry["decode_ms"] = 1000 * statistics.median(
                t for i, t in times[name].items() if coco_eval.bucket_of(counts[i]) == bucket)
        report[name] = {
            **{m: metrics[m] for m in METRICS},
            "images": len(image_ids),
            "people": int(sum(counts.values())),
            "decode_ms_per_image": 1000 * statistics.median(times[name].values()) if image_ids else 0.0,
            "by_people": by_people,
            "by_closeness": coco_eval.evaluate_by_closeness(coco, results[name], sigmas, image_ids),
        }
    config = {"annotations": str(annotations.file.path), "input_size": input_size, "seed": seed,
              "degrade": asdict(degradation), "methods": list(codecs)}
    return {"config": config, "results": report}
