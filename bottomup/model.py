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


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The dtype mixed precision runs the network in on ``device``: float16 on CUDA, bfloat16 on CPUs with native
    bf16 support; None (float32) elsewhere or when ``enabled`` is False."""
    if enabled and device.type == "cuda":
        return torch.float16
    if enabled and device.type == "cpu" and cpu_bf16_supported():
        return torch.bfloat16
    return None


def mixed_precision(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Autocast for the network's forward pass in :func:`autocast_dtype`, or nothing where that is float32. Losses
    and decoders always run in float32."""
    dtype = autocast_dtype(device, enabled)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def precision_description(device: torch.device, enabled: bool = True) -> str:
    """What the network computes in on ``device``, in words, for logs: e.g. ``bfloat16 autocast``, or ``float32
    (this CPU has no native bfloat16)`` where mixed precision was asked for but does not apply."""
    dtype = autocast_dtype(device, enabled)
    if dtype is not None:
        return f"{str(dtype).removeprefix('torch.')} autocast"
    return "float32 (this CPU has no native bfloat16)" if enabled and device.type == "cpu" else "float32"
