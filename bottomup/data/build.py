"""Datasets from the ``conf/data/*.yaml`` configs (read as plain mappings: ``cfg.data`` from Hydra or a dict).

A data config's ``root`` defaults to a folder of the repository (``${repo:...}``, see :mod:`bottomup.config`); a
relative root given on the command line is taken from the working directory, like every path a user types.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bottomup.config import resolve_path
from bottomup.data.coco import CLIP_MARGIN, CocoKeypoints
from bottomup.data.synthetic import GROUPED_FRACTION, ensure_synthetic
from bottomup.data.transforms import Augmentation
from bottomup.errors import ConfigError, DataError
from bottomup.methods.base import Codec

KINDS = ("coco", "synthetic")

def dataset_root(cfg: Mapping[str, Any]) -> Path:
    """The data config's ``root``, resolved (see the module docstring)."""
    try:
        root = cfg["root"]
    except Exception as exc:  # omegaconf's MissingMandatoryValue for '???', KeyError for a plain dict
        raise ConfigError(f"data config {cfg.get('name', '?')!r} has no 'root': set it on the command line, e.g. "
                          f"data.root=/path/to/dataset ({type(exc).__name__}).") from None
    if root in (None, "", "???"):
        raise ConfigError(f"data config {cfg.get('name', '?')!r} has no 'root': set it on the command line, e.g. "
                          f"data.root=/path/to/dataset.")
    return resolve_path(str(root))


def build_dataset(cfg: Mapping[str, Any], split: str, codec: Codec | None = None, train: bool | None = None,
                  seed: int = 0) -> CocoKeypoints:
    """The ``split`` (``train`` or ``val``) of the dataset a data config describes.

    A ``kind: synthetic`` config generates its files first if needed (:func:`ensure_synthetic`).

    Args:
        cfg: the data config (``conf/data/<name>.yaml``).
        split: which of the config's splits.
        codec: the method's codec, for training targets (``None``: images and metadata only).
        train: augment (``True``) or fit for evaluation (``False``); default: augment the ``train`` split only.
        seed: base seed of the augmentation.
    """
    kind = cfg.get("kind", "coco")
    if kind not in KINDS:
        raise ConfigError(f"data config {cfg.get('name', '?')!r}: 'kind' is {kind!r}, expected one of {KINDS}.")
    if split not in cfg:
        raise ConfigError(f"data config {cfg.get('name', '?')!r} has no split {split!r}.")
    root = dataset_root(cfg)
    if kind == "synthetic":
        gen = cfg["synthetic"]
        ensure_synthetic(root, int(gen["num_train"]), int(gen["num_val"]), tuple(gen["image_size"]), int(gen["seed"]),
                         float(gen.get("grouped_fraction", GROUPED_FRACTION)))
    elif not root.is_dir():
        raise DataError(f"dataset root {root} (data config {cfg.get('name', '?')!r}, field 'root') does not exist; "
                        f"set data.root=/path/to/dataset.")
    part = cfg[split]
    train = split == "train" if train is None else train
    return CocoKeypoints(root / part["annotations"], root / part["images"], input_size=int(cfg["input_size"]),
                         codec=codec, augmentation=Augmentation.from_config(cfg["augment"]) if train else None,
                         seed=seed, clip_margin=float(cfg.get("clip_margin", CLIP_MARGIN)),
                         skip_empty=bool(part.get("skip_empty", False)))
