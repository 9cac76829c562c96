"""Convolutional building blocks shared by the trunks and by heads that refine trunk features.

The residual blocks keep the attribute names of the reference HRNet / HigherHRNet code (``conv1``, ``bn1``, ...,
``downsample``) so that published checkpoints load into these modules without renaming keys.
"""

from __future__ import annotations

from torch import Tensor, nn

# PyTorch's default, written out because the reference HRNet code sets it explicitly and BN statistics matter when
# comparing trunks trained with small per-GPU batches.
BN_MOMENTUM = 0.1


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Bias-free ``kernel_size`` conv (same padding) + BatchNorm, optionally + ReLU.

    ``[B, in_channels, H, W]`` -> ``[B, out_channels, ceil(H / stride), ceil(W / stride)]`` for odd kernels.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity when shapes match, else the 1x1 conv + BN projection of ResNet / HRNet."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_bn(in_channels, out_channels, 1, stride=stride, relu=False)


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, add shortcut, ReLU.

    ``[B, in_channels, H, W]`` -> ``[B, channels, H / stride, W / stride]``.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 conv-BN-ReLU, 3x3 conv-BN-ReLU, 1x1 conv-BN to ``4 * channels``, add shortcut, ReLU.

    ``[B, in_channels, H, W]`` -> ``[B, 4 * channels, H / stride, W / stride]``.
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, ReLU gain) with zero biases; BatchNorm weight 1, bias 0.

    Applied to every submodule of ``module``; trunks call it at the end of ``__init__``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
