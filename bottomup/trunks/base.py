"""The small interface every trunk offers, so that any head runs on any trunk.

A trunk maps an image batch to one or more feature maps, highest resolution first, and says their channels and
strides. Multi-stack trunks (Stacked Hourglass) call a head once per stack and feed its predictions back into the
next stack; single-stack trunks call one head once. :meth:`Trunk.run` hides the difference from the model.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from bottomup.errors import CheckpointError

# What other training code puts before a trunk's own parameter names (DataParallel, our PoseModel, mmpose models).
_NAME_PREFIXES = ("module.", "trunk.", "backbone.")


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and stride (input pixels per feature pixel) of each feature map a trunk returns, finest first."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ValueError(f"FeatureInfo needs one stride per feature map, got channels={self.channels} "
                             f"strides={self.strides}")


class Trunk(nn.Module):
    """Base class for trunks.

    Subclasses set ``feature_info`` and ``num_stacks`` in ``__init__`` and implement :meth:`forward` (single stack)
    or override :meth:`run` (several stacks).
    """

    feature_info: FeatureInfo
    num_stacks: int = 1

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images`` ``[B, 3, H, W]`` -> feature maps ``[B, C_i, H / s_i, W / s_i]``, finest first."""
        raise NotImplementedError

    def attach_heads(self, heads: Sequence[nn.Module]) -> None:
        """Called once by the model with its heads (one per stack), before any forward pass.

        Multi-stack trunks create here the layers that re-inject each stack's predictions into the next one, sized by
        ``head.prediction_channels``. Single-stack trunks need nothing.
        """

    def run(self, images: Tensor, heads: Sequence[nn.Module]) -> list[dict[str, Tensor]]:
        """Features -> heads: every supervised prediction, in order; the last one is the model's output."""
        return heads[0](self(images))


@dataclass(frozen=True)
class PretrainedLoad:
    """What :func:`load_pretrained` did: tensors copied, trunk tensors the file lacks (left as initialised) and file
    tensors the trunk has no place for (a classifier, say)."""

    loaded: int
    missing: tuple[str, ...]
    unused: tuple[str, ...]


def load_pretrained(trunk: nn.Module, path: str | os.PathLike) -> PretrainedLoad:
    """Copy the weights of a saved state dict into ``trunk`` wherever the names and shapes agree.

    Takes a bare state dict or one under ``state_dict`` / ``model``, with or without a ``module.``, ``trunk.`` or
    ``backbone.`` prefix. Our HRNet keeps the official HRNet parameter names, so the published ImageNet checkpoints
    should load as they are, their classification layers reported unused (not tried here: nothing is downloaded).

    Raises:
        CheckpointError: naming ``path``: unreadable, no tensor named like the trunk's, or a tensor of another shape
            (weights of another width or depth).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[-1]
        raise CheckpointError(f"cannot read pretrained trunk weights {path}: it holds objects other than tensors and "
                              f"plain containers, which are not loaded from a weights file ({reason})") from None
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"cannot read pretrained trunk weights {path}: {err}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"pretrained trunk weights {path} hold a {type(state).__name__}, not a state dict")
    tensors = {}
    for name, value in state.items():
        if isinstance(value, Tensor):
            for prefix in _NAME_PREFIXES:
                name = name[len(prefix):] if name.startswith(prefix) else name
            tensors[name] = value
    own = trunk.state_dict()
    matched = {k: v for k, v in tensors.items() if k in own}
    if not matched:
        raise CheckpointError(f"pretrained trunk weights {path} have no tensor named like this trunk's (it has e.g. "
                              f"{next(iter(own))!r}, the file e.g. {next(iter(tensors), None)!r})")
    wrong = [f"{k} {tuple(v.shape)} in the file, {tuple(own[k].shape)} here" for k, v in matched.items()
             if v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"pretrained trunk weights {path} do not fit this trunk ({len(wrong)} tensors of another "
                              f"shape, e.g. {wrong[0]}): weights of another width or depth?")
    trunk.load_state_dict(matched, strict=False)
    return PretrainedLoad(len(matched), tuple(k for k in own if k not in matched),
                          tuple(k for k in tensors if k not in own))
