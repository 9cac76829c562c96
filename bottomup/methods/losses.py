"""Loss terms shared by the methods, and the sum over supervised predictions that every method's loss is.

Masks are ``[B, 1, H, W]`` with 1 where the loss may look and 0 on crowds and unannotated people; masked pixels
still count in the mean (as HigherHRNet and DEKR do), so a mostly ignored image weighs less. Every term computes in
float32 whatever the predictions' dtype, so mixed-precision training does not square half-precision errors.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bottomup.methods.base import Codec, Loss, Outputs

PUSH_TYPES = ("exp", "max")


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over ``B, C, H, W`` of ``mask * (pred - target)^2`` (HigherHRNet's heatmap loss).

    Args:
        pred, target: ``[B, C, H, W]``.
        mask: ``[B, 1, H, W]`` (broadcast over channels), or None for no mask.
    """
    error = (pred.float() - target.float()).square()
    if mask is not None:
        error = error * mask.float()
    return error.mean()


def field_l2(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Masked squared Euclidean error of 2-D vector fields, averaged over vectors and pixels.

    ``pred, target [B, 2L, H, W]`` hold L fields as (x, y) channel pairs, so the per-vector squared norm is the sum
    of two channels' squared errors: this is twice :func:`masked_mse` of the same maps.
    """
    return 2.0 * masked_mse(pred, target, mask)


def weighted_smooth_l1(pred: Tensor, target: Tensor, weight: Tensor, mask: Tensor | None = None,
                       beta: float = 1.0 / 9.0) -> Tensor:
    """Smooth-L1 of displacements weighted by a per-joint weight map, averaged over the weighted components (DEKR).

    ``sum(w * smooth_l1(pred - target)) / max(1, #components with w > 0)``, where a component is the x or the y
    offset of one joint at one pixel, and ``w`` is the joint's weight (times the mask) at that pixel.

    Args:
        pred, target: ``[B, 2K, H, W]`` displacements, x then y per joint.
        weight: ``[B, K, H, W]``, 0 where there is no target.
        mask: ``[B, 1, H, W]`` ignore mask, or None.
        beta: where the loss turns from quadratic to linear, in map pixels.
    """
    b, c, h, w = pred.shape
    weight = weight.float() if mask is None else weight.float() * mask.float()
    weight = weight[:, :, None].expand(b, c // 2, 2, h, w).reshape(b, c, h, w)
    error = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=beta)
    return (error * weight).sum() / (weight > 0).sum().clamp_min(1)


def person_tags(tags: Tensor, joints: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The tags at every labelled joint of every person, and each person's mean tag, vectorised over images.

    Args:
        tags: ``[B, K, D, H, W]``.
        joints: ``[B, P, K, 2]`` long: flat index ``row * W + col`` of each joint in its tag map, and a 0/1 labelled
            flag; rows of padding have every flag 0.
    Returns:
        ``tags [B, P, K, D]`` (float32, read at each joint's pixel of its own joint's map; meaningless where not
        labelled), ``labelled [B, P, K]`` (float 0/1) and ``mean [B, P, D]`` (mean over the labelled joints; 0 for a
        person without any).
    """
    b, k, d, h, w = tags.shape
    people = joints.shape[1]
    index = joints[..., 0].transpose(1, 2)  # [B, K, P]
    read = tags.float().view(b, k, d, h * w).gather(3, index[:, :, None].expand(b, k, d, people))
    joint_tags = read.permute(0, 3, 1, 2)  # [B, P, K, D]
    labelled = (joints[..., 1] > 0).float()
    count = labelled.sum(dim=2)
    mean = (joint_tags * labelled[..., None]).sum(dim=2) / count.clamp_min(1)[..., None]
    return joint_tags, labelled, mean


def ae_pull_push(tags: Tensor, joints: Tensor, push: str = "exp") -> tuple[Tensor, Tensor]:
    """Associative-embedding grouping loss, vectorised over images and people.

    For image ``b`` let its people be the rows of ``joints[b]`` with at least one labelled joint, ``n_b`` of them;
    person ``p`` has labelled joints ``J_p`` with tags ``t_pk`` (``D``-vectors read at the joints' pixels of the
    joints' own tag maps) and mean tag ``m_p = mean_{k in J_p} t_pk``. Then

    * ``pull_b = (1 / n_b) sum_p (1 / |J_p|) sum_{k in J_p} ||t_pk - m_p||^2`` (0 when ``n_b = 0``);
    * ``push_b = (1 / (n_b (n_b - 1))) sum_{p != q} f(m_p, m_q)`` over ordered pairs (0 when ``n_b < 2``), with
      ``f = exp(-||m_p - m_q||^2)`` for ``push="exp"`` and ``f = max(0, 1 - ||m_p - m_q||)`` for ``push="max"``;

    and the returned values are the means over the batch. For ``D = 1`` the norms are absolute values and this is
    HigherHRNet's ``AELoss`` except that its code halves the push term (its push factor 1e-3 is 5e-4 here).

    Args:
        tags, joints: as :func:`person_tags`.
        push: ``exp`` or ``max``.
    Returns:
        ``(pull, push)`` scalars.
    """
    if push not in PUSH_TYPES:
        raise ValueError(f"push must be one of {PUSH_TYPES}, got {push!r}")
    joint_tags, labelled, mean = person_tags(tags, joints)
    count = labelled.sum(dim=2)
    present = count > 0
    deviation = (joint_tags - mean[:, :, None]).square().sum(dim=3)  # [B, P, K]
    person_pull = (deviation * labelled).sum(dim=2) / count.clamp_min(1)
    n = present.sum(dim=1)
    pull = (person_pull * present).sum(dim=1) / n.clamp_min(1)

    difference = mean[:, :, None] - mean[:, None]  # [B, P, P, D]
    if push == "exp":
        affinity = torch.exp(-difference.square().sum(dim=3))
    else:
        # vector_norm's gradient is 0, not NaN, at coinciding tags (padding rows all sit at 0).
        affinity = (1.0 - torch.linalg.vector_norm(difference, dim=3)).clamp_min(0)
    people = joints.shape[1]
    distinct = ~torch.eye(people, dtype=torch.bool, device=tags.device)
    pairs = present[:, :, None] & present[:, None] & distinct
    push_sum = torch.where(pairs, affinity, torch.zeros_like(affinity)).sum(dim=(1, 2))
    push_loss = push_sum / (n * (n - 1)).clamp_min(1)
    return pull.mean(), push_loss.mean()


class StagedLoss(Loss):
    """A method's loss: named parts per prediction, summed over all supervised predictions with ``stage_weights``.

    Subclasses implement :meth:`parts` for one prediction dict (already multiplied by their part weights). The
    returned parts are the weighted sums over predictions, so ``total == sum(parts.values())``.

    Args:
        codec: the method's codec.
        stage_weights: one factor per supervised prediction (refinement stages times trunk stacks, in the order
            the model returns them); None weighs every prediction 1.
    """

    def __init__(self, codec: Codec, stage_weights: Sequence[float] | None = None) -> None:
        super().__init__(codec)
        self.stage_weights = None if stage_weights is None else tuple(float(x) for x in stage_weights)

    @abstractmethod
    def parts(self, prediction: Outputs, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Weighted loss terms of one prediction dict against the batched targets."""

    def forward(self, predictions: list[Outputs], targets: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        weights = self.stage_weights or (1.0,) * len(predictions)
        if len(weights) != len(predictions):
            raise ValueError(f"stage_weights has {len(weights)} factors for {len(predictions)} supervised "
                             f"predictions (stages x stacks)")
        totals: dict[str, Tensor] = {}
        for weight, prediction in zip(weights, predictions):
            for name, value in self.parts(prediction, targets).items():
                totals[name] = totals[name] + weight * value if name in totals else weight * value
        total = torch.stack(list(totals.values())).sum()
        return total, {name: value.detach() for name, value in totals.items()}
