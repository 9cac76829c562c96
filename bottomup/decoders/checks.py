"""Input checks shared by the decoders: shapes that name the problem, and maps made safe to decode.

A decoder must never crash on what a half-trained network emits: NaN reads as 0 and infinities are clamped, so the
output poses stay finite. Shape errors, on the other hand, are the caller's bug and raise ``ValueError`` naming the
argument and the shapes involved.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

# Large enough for any real map value, small enough that sums and products of a few of them stay finite in float32.
MAP_LIMIT = 1.0e4


def check_rank(name: str, tensor: Tensor, ranks: Sequence[int], layout: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(tensor).__name__}")
    if tensor.dim() not in ranks:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(tensor.shape)}")


def check_channels(name: str, tensor: Tensor, expected: int, why: str) -> None:
    if tensor.shape[1] != expected:
        raise ValueError(f"{name} has {tensor.shape[1]} channels (shape {tuple(tensor.shape)}), expected {expected}: "
                         f"{why}")


def check_same_batch_and_size(reference_name: str, reference: Tensor, name: str, tensor: Tensor,
                              size_factor: int = 1) -> None:
    """``tensor`` must share the batch size of ``reference`` and have ``size_factor`` times its spatial size."""
    want_hw = (reference.shape[-2] * size_factor, reference.shape[-1] * size_factor)
    if tensor.shape[0] != reference.shape[0] or tuple(tensor.shape[-2:]) != want_hw:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape "
                         f"{tuple(reference.shape)}: expected batch {reference.shape[0]} and spatial size {want_hw}")


def as_float(tensor: Tensor) -> Tensor:
    """The maps as float32 (a no-op for float32 input), detached from any graph."""
    return tensor.detach().float()


def finite(tensor: Tensor) -> Tensor:
    """NaN set to 0 and values clamped to +-:data:`MAP_LIMIT`.

    Applied to the short lists decoders gather from the maps (peak scores, tags, sampled fields), not to whole maps:
    a non-finite pixel can then never leak into an output, at a cost independent of the map size.
    """
    return torch.nan_to_num(tensor, nan=0.0, posinf=MAP_LIMIT, neginf=-MAP_LIMIT).clamp(-MAP_LIMIT, MAP_LIMIT)
