"""Checkpoints written atomically, with everything needed to continue a run exactly."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bottomup.cli import write_atomic
from bottomup.errors import CheckpointError

# What evaluation and prediction read from a checkpoint: the weights, the trunk x method config and the skeleton.
REQUIRED = frozenset({"model", "config", "skeleton"})


def save(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file and rename it over ``path``: a run killed at any
    moment leaves either the previous checkpoint or the new one, never a truncated file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return write_atomic(path, buffer.getvalue())


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; a missing or unreadable file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for corrupt files (pickle, zip, runtime)
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is not a "
                              f"bottomup checkpoint or it is corrupt") from None
    missing = REQUIRED - set(state) if isinstance(state, dict) else REQUIRED
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {sorted(missing)}: it was not written by bottomup.train")
    return state


def rng_state() -> dict[str, Any]:
    """The state of every random generator a run draws from, in types ``torch.load(weights_only=True)`` accepts (numpy's
    key array as a tensor), so that a checkpoint also serves as pretrained trunk weights."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s generators. The torch states must be CPU byte tensors, wherever ``torch.load``'s
    ``map_location`` put them (a run resumed on a GPU loads its checkpoint onto it)."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    keys = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else keys  # checkpoints before the tensor form
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
