"""Data: COCO-format keypoint datasets, the synthetic default dataset, augmentation and deterministic loaders.

Typical use, with ``cfg.data`` one of ``conf/data/*.yaml``::

    train_set = build_dataset(cfg.data, "train", codec=method.codec, seed=cfg.seed)
    loader = build_loader(train_set, batch_size=16, shuffle=True, num_workers=2, seed=cfg.seed)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader: ...
"""

from bottomup.data.build import build_dataset, dataset_root
from bottomup.data.coco import (CLIP_MARGIN, CocoKeypoints, ImageAnnotation, KeypointFile, load_keypoint_file,
                                read_image, region_mask)
from bottomup.data.loader import EpochLoader, build_loader
from bottomup.data.synthetic import SyntheticPaths, describe, ensure_synthetic
from bottomup.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, Augmentation, EvalTransform, TrainTransform,
                                      Warped, denormalize, normalize, train_matrix, warp)

__all__ = [
    "CLIP_MARGIN", "IMAGENET_MEAN", "IMAGENET_STD", "Augmentation", "CocoKeypoints", "EpochLoader", "EvalTransform",
    "ImageAnnotation", "KeypointFile", "SyntheticPaths", "TrainTransform", "Warped", "build_dataset", "build_loader",
    "dataset_root", "denormalize", "describe", "ensure_synthetic", "load_keypoint_file", "normalize", "read_image",
    "region_mask", "train_matrix", "warp",
]
