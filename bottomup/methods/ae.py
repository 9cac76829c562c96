"""Associative Embedding: keypoint heatmaps + one tag (embedding) map per joint, grouped by tag similarity.

Targets (Newell et al.): a Gaussian per labelled joint, people combined by maximum, and for the pull/push loss the
flat map index of every labelled joint of every person (``joints [max_people, K, 2]``: index, labelled flag). The
tags have no target values -- the loss only asks a person's tags to agree and different people's to differ -- so the
ideal tag maps give person ``n`` the value ``n + 1`` wherever its Gaussian dominates.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from bottomup.decoders.ae import AEDecoder
from bottomup.methods import targets
from bottomup.methods.base import Codec, GroupingMethod, Head, Outputs, OutputSpec
from bottomup.methods.heads import Branch, split_outputs, trunk_stride_outputs
from bottomup.methods.losses import PUSH_TYPES, StagedLoss, ae_pull_push, masked_mse
from bottomup.poses import Poses
from bottomup.skeletons import Skeleton
from bottomup.trunks.base import FeatureInfo


class AECodec(Codec):
    """Encodes people as heatmaps + AE joint indices; decodes with :class:`~bottomup.decoders.AEDecoder`.

    Args:
        skeleton: keypoint layout.
        stride: input pixels per map pixel.
        sigma: Gaussian sigma of the heatmaps, in map pixels.
        tag_dim: dimension of each joint's tag.
        max_people: people per image kept for the pull/push loss (fixed so that batches collate).
        decoder: options of :class:`~bottomup.decoders.AEDecoder`.
    """

    decoder_class = AEDecoder

    def __init__(self, skeleton: Skeleton, stride: int = 4, sigma: float = 2.0, tag_dim: int = 1,
                 max_people: int = 30, decoder: Mapping | None = None) -> None:
        super().__init__(skeleton, stride, sigma, decoder)
        if tag_dim < 1:
            raise ValueError(f"tag_dim must be >= 1, got {tag_dim}")
        self.tag_dim = int(tag_dim)
        self.max_people = int(max_people)
        self.decoder = self.decoder_class(skeleton, **self.decoder_options)

    @property
    def outputs(self) -> dict[str, OutputSpec]:
        k = self.skeleton.num_keypoints
        return {
            "heatmaps": OutputSpec(k, self.stride, "heatmap", "detection"),
            "tags": OutputSpec(k * self.tag_dim, self.stride, "tag", "grouping"),
        }

    def encode(self, keypoints, input_size, mask=None) -> dict[str, Tensor]:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride)
        width, height = targets.map_size(input_size, self.stride)
        heatmaps, _ = targets.render_heatmaps(kpts, width, height, self.sigma)
        return {"heatmaps": heatmaps, "mask": targets.downsample_mask(mask, input_size, self.stride),
                "joints": self._joint_indices(kpts, width, height)}

    def _joint_indices(self, kpts: Tensor, width: int, height: int) -> Tensor:
        """``[max_people, K, 2]`` long: flat index ``row * W + col`` of each labelled joint and a 0/1 flag."""
        k = self.skeleton.num_keypoints
        joints = torch.zeros(self.max_people, k, 2, dtype=torch.long)
        kept = kpts[targets.inside(kpts, width, height).any(dim=1)][: self.max_people]
        labelled = targets.inside(kept, width, height)
        col = kept[..., 0].round().clamp(0, width - 1).long()
        row = kept[..., 1].round().clamp(0, height - 1).long()
        joints[: len(kept), :, 0] = (row * width + col) * labelled
        joints[: len(kept), :, 1] = labelled.long()
        return joints

    def ideal_outputs(self, keypoints, input_size) -> Outputs:
        kpts = targets.to_map(targets.as_keypoints(keypoints, self.skeleton.num_keypoints), self.stride)
        width, height = targets.map_size(input_size, self.stride)
        person_tags = torch.arange(1, kpts.shape[0] + 1, dtype=torch.float32)
        heatmaps, tags = targets.render_heatmaps(kpts, width, height, self.sigma, tags=person_tags)
        k = self.skeleton.num_keypoints
        tag_maps = torch.zeros(k, self.tag_dim, height, width)
        tag_maps[:, 0] = tags
        return {"heatmaps": heatmaps, "tags": tag_maps.view(k * self.tag_dim, height, width)}

    def joint_tags(self, tags: Tensor) -> Tensor:
        """``[B, K * D, H, W]`` tag output -> ``[B, K, D, H, W]`` (D read from the channel count)."""
        b, c, h, w = tags.shape
        k = self.skeleton.num_keypoints
        if c % k:
            raise ValueError(f"tags has {c} channels, not a multiple of the {k} keypoints")
        return tags.view(b, k, c // k, h, w)

    def decode_maps(self, outputs: Mapping[str, Tensor]) -> list[Poses]:
        return self.decoder(outputs["heatmaps"], self.joint_tags(outputs["tags"]))

    def flip_outputs(self, outputs: Mapping[str, Tensor]) -> Outputs:
        return {name: self.flip_channels(outputs[name], spec.kind) for name, spec in self.outputs.items()}


class AEHead(Head):
    """Associative-embedding head: the trunk's stride-4 features -> K heatmaps and K * tag_dim tags.

    By default a single 1x1 conv to ``K + K * tag_dim`` channels, HigherHRNet's final layer; ``num_convs`` adds
    conv-BN-ReLU layers of ``channels`` (default: the trunk's width) before it.

    Args:
        codec: an :class:`AECodec` (or subclass; only its outputs at the trunk stride are predicted here).
        feature_info: the trunk's features.
        num_convs, channels, kernel_size: the optional tower before the 1x1 conv.
    """

    def __init__(self, codec: Codec, feature_info: FeatureInfo, num_convs: int = 0, channels: int | None = None,
                 kernel_size: int = 3) -> None:
        super().__init__(codec, feature_info)
        self.specs = trunk_stride_outputs(codec, feature_info)
        features = feature_info.channels[0]
        self.final = Branch(features, self.prediction_channels, num_convs, channels or features, kernel_size)

    def forward(self, features: list[Tensor]) -> list[Outputs]:
        """``features[0] [B, C, H, W]`` -> ``[{"heatmaps": [B, K, H, W], "tags": [B, K * D, H, W]}]``."""
        return [split_outputs(self.final(features[0]), self.specs)]


class AELoss(StagedLoss):
    """Masked heatmap MSE + AE pull/push (:func:`~bottomup.methods.losses.ae_pull_push`), summed over predictions.

    Targets: ``heatmaps [B, K, H, W]``, ``mask [B, 1, H, W]``, ``joints [B, P, K, 2]``. Parts: ``heatmap``,
    ``pull``, ``push``. The defaults are HigherHRNet's COCO factors (pull 1e-3; push 1e-3 on a push it halves).

    Args:
        heatmap_weight, pull_weight, push_weight: factors of the three terms.
        push: ``exp`` (``exp(-d^2)``) or ``max`` (``max(0, 1 - d)``) for the push between people's mean tags.
        stage_weights: see :class:`~bottomup.methods.losses.StagedLoss`.
    """

    def __init__(self, codec: Codec, heatmap_weight: float = 1.0, pull_weight: float = 1e-3,
                 push_weight: float = 5e-4, push: str = "exp", stage_weights: Sequence[float] | None = None) -> None:
        super().__init__(codec, stage_weights)
        if push not in PUSH_TYPES:
            raise ValueError(f"push must be one of {PUSH_TYPES}, got {push!r}")
        self.heatmap_weight = float(heatmap_weight)
        self.pull_weight = float(pull_weight)
        self.push_weight = float(push_weight)
        self.push = push

    def parts(self, prediction: Outputs, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        assert isinstance(self.codec, AECodec)
        pull, push = ae_pull_push(self.codec.joint_tags(prediction["tags"]), targets["joints"], self.push)
        return {"heatmap": self.heatmap_weight * masked_mse(prediction["heatmaps"], targets["heatmaps"],
                                                            targets["mask"]),
                "pull": self.pull_weight * pull, "push": self.push_weight * push}


class AssociativeEmbedding(GroupingMethod):
    """Associative Embedding (Newell et al., NIPS'17): heatmaps + per-joint tags, grouped by tag distance."""

    name = "ae"
    codec_class = AECodec
    head_class = AEHead
    loss_class = AELoss
