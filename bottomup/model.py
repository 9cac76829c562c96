"""A pose model: one trunk and one grouping method's head (one head per trunk stack)."""

from __future__ import annotations

from torch import Tensor, nn

from bottomup.methods.base import GroupingMethod, Outputs
from bottomup.trunks.base import Trunk


class PoseModel(nn.Module):
    """``images [B, 3, H, W]`` (normalised) -> the method's outputs.

    ``forward`` returns every supervised prediction (all stacks, all refinement stages) for the loss; :meth:`predict`
    returns only the last one, which is what the codec decodes.
    """

    def __init__(self, trunk: Trunk, method: GroupingMethod) -> None:
        super().__init__()
        self.trunk = trunk
        self.method = method
        self.codec = method.codec
        self.heads = nn.ModuleList(method.build_head(trunk.feature_info) for _ in range(trunk.num_stacks))
        trunk.attach_heads(self.heads)

    def forward(self, images: Tensor) -> list[Outputs]:
        return self.trunk.run(images, self.heads)

    def predict(self, images: Tensor) -> Outputs:
        return self(images)[-1]
