"""The small shared interface of a grouping method: codec (targets in, poses out), head and loss.

A method is one module under ``bottomup/methods/`` defining a :class:`GroupingMethod` subclass that names its
:class:`Codec`, :class:`Head` and :class:`Loss`, plus one ``conf/method/<name>.yaml`` whose ``_target_`` is that
subclass. The rest of bottomup (data, training, evaluation, oracle) reaches methods only through these classes.

Named outputs. Every method declares its outputs as ``{name: OutputSpec}``. The spec's ``kind`` says how maps of
that output behave (heatmaps are averaged, tags concatenated, vector fields flip sign under a mirror) and its ``role``
whether the output *detects* joints or *groups* them; the oracle study swaps one role at a time for ideal maps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from bottomup.poses import Poses
from bottomup.skeletons import Skeleton
from bottomup.trunks.base import FeatureInfo

OUTPUT_KINDS = ("heatmap", "field", "tag", "displacement")
OUTPUT_ROLES = ("detection", "grouping")


@dataclass(frozen=True)
class OutputSpec:
    """One named output of a method's head.

    Attributes:
        channels: channel count of the tensor ``[B, channels, H / stride, W / stride]``.
        stride: input pixels per map pixel.
        kind: ``heatmap`` (scores in [0, 1]), ``field`` (2-D vector fields, x then y per vector), ``tag`` (embeddings)
            or ``displacement`` (offsets in map pixels, x then y per joint).
        role: ``detection`` (where the joints are) or ``grouping`` (which joints belong together).
    """

    channels: int
    stride: int
    kind: str
    role: str

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"OutputSpec.kind must be one of {OUTPUT_KINDS}, got {self.kind!r}")
        if self.role not in OUTPUT_ROLES:
            raise ValueError(f"OutputSpec.role must be one of {OUTPUT_ROLES}, got {self.role!r}")


Outputs = dict[str, Tensor]


class Codec(ABC):
    """Encodes annotations into training targets and decodes head outputs into poses, for one method.

    Keypoints passed to :meth:`encode` and :meth:`ideal_outputs` are ``[N, K, 3]`` (x, y, v) in input-image pixels
    (after the data pipeline's affine); ``v > 0`` marks a labelled joint. :meth:`decode` returns poses in input
    pixels too, so callers never need to know a method's strides.
    """

    def __init__(self, skeleton: Skeleton, stride: int = 4, sigma: float = 2.0,
                 decoder: Mapping[str, Any] | None = None) -> None:
        self.skeleton = skeleton
        self.stride = int(stride)
        self.sigma = float(sigma)
        self.decoder_options = dict(decoder or {})

    @property
    @abstractmethod
    def outputs(self) -> dict[str, OutputSpec]:
        """The head's outputs, by name."""

    @abstractmethod
    def encode(self, keypoints: Tensor | np.ndarray, input_size: tuple[int, int],
               mask: Tensor | np.ndarray | None = None) -> dict[str, Tensor]:
        """Training targets for one image of ``input_size = (width, height)``.

        ``mask`` is an optional ``[H, W]`` array at input resolution, 1 where the loss may look and 0 on crowds and
        unannotated people. Returns unbatched tensors (the loader stacks them); every entry has a fixed shape for a
        given input size so default collation works.
        """

    @abstractmethod
    def ideal_outputs(self, keypoints: Tensor | np.ndarray, input_size: tuple[int, int]) -> Outputs:
        """What a perfect head outputs for these people: one unbatched tensor per name in :attr:`outputs`."""

    @abstractmethod
    def decode_maps(self, outputs: Mapping[str, Tensor]) -> list[Poses]:
        """Batched head outputs -> poses in the grid of the stride-:attr:`stride` outputs."""

    def decode(self, outputs: Mapping[str, Tensor]) -> list[Poses]:
        """Batched head outputs -> one :class:`Poses` per image, in input pixels."""
        s = float(self.stride)
        return [p.transformed(s, 0.5 * s - 0.5) for p in self.decode_maps(outputs)]

    @abstractmethod
    def flip_outputs(self, outputs: Mapping[str, Tensor]) -> Outputs:
        """Outputs computed on a horizontally mirrored input, brought back into the unmirrored frame."""

    def fuse(self, outputs: Sequence[Mapping[str, Tensor]]) -> Outputs:
        """Combine several outputs of one image at one size (flip test): maps averaged; per-joint tags concatenated,
        so each joint's tag dimension grows (the AE flip test)."""
        fused: Outputs = {}
        k = self.skeleton.num_keypoints
        for name, spec in self.outputs.items():
            maps = [o[name] for o in outputs]
            if spec.kind == "tag":
                b, _, h, w = maps[0].shape
                fused[name] = torch.cat([m.view(b, k, -1, h, w) for m in maps], dim=2).view(b, -1, h, w)
            else:
                fused[name] = torch.stack(maps).mean(0)
        return fused

    def flip_channels(self, maps: Tensor, kind: str) -> Tensor:
        """Mirror ``[B, C, H, W]`` maps of one joint-indexed output kind and swap their left/right joints.

        ``heatmap`` and ``tag`` maps with a multiple of K channels have their joints swapped (other heatmaps, such as
        SPM's single root map, are only mirrored); ``displacement`` maps (x then y per joint) also have their x
        components negated. ``field`` maps follow the codec's limbs, which only the codec knows how to swap: it flips
        them in its own :meth:`flip_outputs`, and this raises for them.
        """
        if kind == "field":
            raise ValueError("flip_channels cannot flip 'field' outputs: their channels follow the codec's limbs, so "
                             "the codec must flip them in its own flip_outputs")
        k = self.skeleton.num_keypoints
        perm = torch.as_tensor(self.skeleton.flip_index, device=maps.device)
        maps = maps.flip(-1)
        if kind in ("heatmap", "tag") and maps.shape[1] % k == 0 and maps.shape[1] >= k:
            per_joint = maps.shape[1] // k
            return maps.view(maps.shape[0], k, per_joint, *maps.shape[2:])[:, perm].reshape(maps.shape)
        if kind == "displacement":
            xy = maps.view(maps.shape[0], k, 2, *maps.shape[2:])[:, perm].clone()
            xy[:, :, 0] = -xy[:, :, 0]
            return xy.reshape(maps.shape)
        return maps


class Head(nn.Module):
    """Trunk features -> the method's outputs.

    ``forward`` returns every supervised prediction as a list of output dicts (several for methods with refinement
    stages); the last dict is the prediction used at inference. ``prediction_channels`` is the number of channels of
    that prediction at the trunk's finest stride, which multi-stack trunks feed back into the next stack.
    """

    def __init__(self, codec: Codec, feature_info: FeatureInfo) -> None:
        super().__init__()
        self.codec = codec
        self.feature_info = feature_info

    @property
    def prediction_channels(self) -> int:
        stride = self.feature_info.strides[0]
        return sum(spec.channels for spec in self.codec.outputs.values() if spec.stride == stride)

    def reinjection(self, prediction: Mapping[str, Tensor]) -> Tensor:
        """The prediction's maps at the trunk's finest stride, concatenated in output order."""
        stride = self.feature_info.strides[0]
        return torch.cat([prediction[n] for n, s in self.codec.outputs.items() if s.stride == stride], dim=1)

    def forward(self, features: list[Tensor]) -> list[Outputs]:
        raise NotImplementedError


class Loss(nn.Module):
    """Sum of the method's losses over all supervised predictions.

    ``forward(predictions, targets)`` returns ``(total, parts)``: a scalar to back-propagate and a dict of named,
    detached scalar parts for logging (e.g. ``heatmap``, ``paf``, ``pull``, ``push``).
    """

    def __init__(self, codec: Codec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, predictions: list[Outputs], targets: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


class GroupingMethod:
    """A grouping strategy: its codec, and factories for its head and loss.

    Subclasses set the class attributes; configs instantiate them with ``skeleton`` plus the keyword dicts of
    ``conf/method/<name>.yaml`` (``codec``, ``decoder``, ``head``, ``loss``).
    """

    name: ClassVar[str]
    codec_class: ClassVar[type[Codec]]
    head_class: ClassVar[type[Head]]
    loss_class: ClassVar[type[Loss]]

    def __init__(self, skeleton: Skeleton, codec: Mapping[str, Any] | None = None,
                 decoder: Mapping[str, Any] | None = None, head: Mapping[str, Any] | None = None,
                 loss: Mapping[str, Any] | None = None, name: str | None = None) -> None:
        if name is not None and name != self.name:
            raise ValueError(f"config names method {name!r} but its _target_ is {type(self).__name__} "
                             f"(method {self.name!r})")
        self.skeleton = skeleton
        self.codec = self.codec_class(skeleton, decoder=decoder, **dict(codec or {}))
        self.head_options = dict(head or {})
        self.loss_options = dict(loss or {})

    def build_head(self, feature_info: FeatureInfo) -> Head:
        return self.head_class(self.codec, feature_info, **self.head_options)

    def build_loss(self) -> Loss:
        return self.loss_class(self.codec, **self.loss_options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(skeleton={self.skeleton.name!r})"
