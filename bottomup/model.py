"""A pose model: one trunk and one grouping method's head (one head per trunk stack)."""

from __future__ import annotations

import contextlib

import torch
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
        # Channels-last activations make the convolutions 10-17 % faster on CPU (oneDNN); on CUDA it is cuDNN's
        # native layout for half-precision convolutions. The outputs keep that layout, which the losses do not mind.
        return self.trunk.run(images.contiguous(memory_format=torch.channels_last), self.heads)

    def predict(self, images: Tensor) -> Outputs:
        """The last prediction, in the standard (contiguous) layout that decoders and map arithmetic expect."""
        return {name: maps.contiguous() for name, maps in self(images)[-1].items()}


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (AVX-512 BF16 or AMX), where they are ~2x faster."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check is not None and check()) or (amx is not None and amx()))


def mixed_precision(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Autocast for the network's forward pass: float16 on CUDA, bfloat16 on CPUs with native bf16 support,
    nothing elsewhere or when ``enabled`` is False. Losses and decoders always run in float32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if enabled and device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
