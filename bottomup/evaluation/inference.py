"""Running a trained model over a dataset: flip and multi-scale test, optional oracle maps, decode, map back.

Shared by ``bottomup.evaluate``, the evaluation at the end of training epochs and ``bottomup.compare``. Network time
and decode time are measured separately (the decoders are what this library is about).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bottomup import geometry
from bottomup.data.coco import CocoKeypoints
from bottomup.evaluation import coco_eval
from bottomup.methods.base import Codec, Outputs
from bottomup.model import PoseModel, mixed_precision

ORACLES = ("none", "heatmaps", "grouping")
# Multi-scale inputs are rounded to a multiple of this, which every trunk's strides divide.
_SIZE_MULTIPLE = 64


@dataclass
class InferenceOptions:
    """How to run the model at test time.

    Attributes:
        flip: average with the horizontally mirrored input (maps averaged, AE tags concatenated).
        scales: input scales; outputs are resized to scale 1 and fused.
        oracle: ``heatmaps`` or ``grouping`` replace the model's detection or grouping outputs by the ideal ones
            rendered from the annotations (``none``: the model's own).
        batch_size: images per forward pass.
        amp: mixed precision (float16 on CUDA, bfloat16 on CPUs with native support; see
            :func:`bottomup.model.mixed_precision`).
    """

    flip: bool = False
    scales: Sequence[float] = (1.0,)
    oracle: str = "none"
    batch_size: int = 8
    amp: bool = True

    def __post_init__(self) -> None:
        if self.oracle not in ORACLES:
            raise ValueError(f"oracle must be one of {ORACLES}, got {self.oracle!r}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {list(self.scales)}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], amp: bool, oracle: str = "none") -> "InferenceOptions":
        """The options of an ``eval`` config section (``flip``, ``scales``, ``batch_size``)."""
        return cls(flip=bool(cfg["flip"]), scales=[float(s) for s in cfg["scales"]], oracle=oracle,
                   batch_size=int(cfg["batch_size"]), amp=bool(amp))


def warn_if_flip_untrained(options: InferenceOptions, trained_on: Mapping[str, Any]) -> None:
    """Warn when flip test is asked of a model whose training data config (``trained_on``) never mirrored an image.

    Such a model has not learnt that a mirrored person's left joints are its right ones: on the synthetic default,
    whose people carry left/right marks that a mirror does not swap (so its config sets ``augment.flip: 0``), flip
    test cut OpenPose's val AP from 0.518 to 0.179 (31 epochs; AE 0.398 -> 0.162, SPM 0.439 -> 0.139).
    """
    mirrored = (trained_on.get("augment") or {}).get("flip")
    if options.flip and mirrored is not None and float(mirrored) == 0.0:
        warnings.warn(f"flip test on a model trained without mirrored images (data {trained_on.get('name')!r} has "
                      f"augment.flip=0): the mirrored pass confuses its left and right joints and usually lowers AP "
                      f"(synthetic default, OpenPose: 0.518 -> 0.179); evaluate with flip=false", stacklevel=2)


def first_images(dataset: CocoKeypoints, max_images: int | None) -> range:
    """Indices of the first ``max_images`` images of ``dataset`` (all of them for ``None``)."""
    return range(len(dataset) if max_images is None else min(len(dataset), int(max_images)))


@dataclass
class InferenceResult:
    """COCO results of every image plus timings; ``image_ids``, ``forward_ms`` and ``decode_ms`` (ms per image: a
    batch's time shared out over its images) in the order the images ran; ``batch_size`` images per call."""

    results: list[dict] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    forward_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    batch_size: int = 1


def resize_outputs(codec: Codec, outputs: Outputs, scale: float) -> Outputs:
    """Outputs of an input scaled by ``scale`` brought to the map sizes of scale 1 (displacements rescaled)."""
    resized = {}
    for name, spec in codec.outputs.items():
        maps = outputs[name]
        size = (round(maps.shape[-2] / scale), round(maps.shape[-1] / scale))
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        resized[name] = maps / scale if spec.kind == "displacement" else maps
    return resized


def forward(model: PoseModel, images: Tensor, options: InferenceOptions) -> Outputs:
    """The fused outputs of ``images [B, 3, S, S]`` under the flip/multi-scale options, at scale-1 map size."""
    codec = model.codec
    fused = []
    size = images.shape[-1]
    autocast = mixed_precision(images.device, options.amp)
    for scale in options.scales:
        # Scale 1 is the size the network was trained at, whatever it is.
        side = size if scale == 1 else max(_SIZE_MULTIPLE, _SIZE_MULTIPLE * round(size * scale / _SIZE_MULTIPLE))
        actual = side / size
        x = images if side == size else F.interpolate(images, size=(side, side), mode="bilinear",
                                                      align_corners=False)
        with autocast:
            out = {k: v.float() for k, v in model.predict(x).items()}
            if options.flip:
                mirrored = codec.flip_outputs({k: v.float() for k, v in model.predict(x.flip(-1)).items()})
        if options.flip:
            out = codec.fuse([out, mirrored])
        fused.append(out if side == size else resize_outputs(codec, out, actual))
    return fused[0] if len(fused) == 1 else codec.fuse(fused)


def ideal_batch(codec: Codec, dataset: CocoKeypoints, indices: Iterable[int], matrices: Tensor,
                size: int) -> Outputs:
    """The codec's ideal outputs for a batch of dataset images (annotations warped like the images)."""
    rendered = []
    for index, matrix in zip(indices, matrices):
        people = dataset.annotation(int(index)).keypoints
        rendered.append(codec.ideal_outputs(geometry.apply(matrix.numpy(), people).astype(np.float32), (size, size)))
    return {k: torch.stack([r[k] for r in rendered]) for k in rendered[0]}


def run(model: PoseModel, dataset: CocoKeypoints, options: InferenceOptions, device: torch.device | str = "cpu",
        indices: Sequence[int] | None = None, progress: bool = False) -> InferenceResult:
    """Predict every image of ``dataset`` (an evaluation-mode dataset without codec targets).

    Poses are decoded in input pixels and mapped back to each image with the inverse of its fit matrix.
    """
    model.eval()
    codec = model.codec
    indices = list(range(len(dataset))) if indices is None else list(indices)
    out = InferenceResult(batch_size=options.batch_size)
    device = torch.device(device)
    batches = [indices[i:i + options.batch_size] for i in range(0, len(indices), options.batch_size)]
    iterator = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc="evaluate", unit="batch", leave=False)
    with torch.inference_mode():
        for batch_indices in iterator:
            samples = [dataset[i] for i in batch_indices]
            images = torch.stack([s["image"] for s in samples]).to(device)
            matrices = torch.stack([s["meta"]["matrix"] for s in samples])
            _sync(device)
            start = time.perf_counter()
            outputs = forward(model, images, options)
            _sync(device)
            forward_s = time.perf_counter() - start
            if options.oracle != "none":
                role = "detection" if options.oracle == "heatmaps" else "grouping"
                ideal = ideal_batch(codec, dataset, batch_indices, matrices, images.shape[-1])
                for name, spec in codec.outputs.items():
                    if spec.role == role:
                        outputs[name] = ideal[name].to(device)
            start = time.perf_counter()
            decoded = codec.decode(outputs)
            _sync(device)
            decode_s = time.perf_counter() - start
            for sample, poses, matrix in zip(samples, decoded, matrices):
                image_id = int(sample["meta"]["image_id"])
                to_image = torch.as_tensor(geometry.invert(matrix.numpy())[:2])
                poses = poses.to("cpu").affine(to_image)
                out.image_ids.append(image_id)
                out.results += coco_eval.poses_to_results(image_id, poses, dataset.file.category["id"])
            n = len(batch_indices)
            out.forward_ms += [1000 * forward_s / n] * n
            out.decode_ms += [1000 * decode_s / n] * n
    return out


def score(dataset: CocoKeypoints, inference: InferenceResult, verbose: bool = False) -> dict:
    """COCO metrics of an inference run, AP and median decode ms by people per image, AP of the images whose people
    stand close or apart (``by_closeness``, :func:`~bottomup.evaluation.coco_eval.evaluate_by_closeness`), and median
    ms per image.

    ``by_people[bucket]["decode_ms"]`` is given only when the images ran one per batch: a batch's time shared out
    over images of every crowd size says nothing about any of them.
    """
    ids = sorted(inference.image_ids)
    metrics = coco_eval.evaluate(dataset.coco, inference.results, dataset.skeleton.sigmas, ids, verbose=verbose)
    metrics["by_people"] = coco_eval.evaluate_by_crowd(dataset.coco, inference.results, dataset.skeleton.sigmas, ids)
    metrics["by_closeness"] = coco_eval.evaluate_by_closeness(dataset.coco, inference.results,
                                                              dataset.skeleton.sigmas, ids)
    decode_ms = dict(zip(inference.image_ids, inference.decode_ms))
    counts = coco_eval.people_per_image(dataset.coco, ids)
    if inference.batch_size == 1:
        for bucket, entry in metrics["by_people"].items():
            entry["decode_ms"] = _median([t for i, t in decode_ms.items() if coco_eval.bucket_of(counts[i]) == bucket])
    metrics["images"] = len(ids)
    metrics["decode_ms_per_image"] = _median(inference.decode_ms)
    metrics["forward_ms_per_image"] = _median(inference.forward_ms)
    return metrics


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
