"""Trunks: every config builds, runs forward and backward, matches its ``feature_info``, and the full-size HRNets
match the published parameter and FLOP counts."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from bottomup.config import PRETRAINED, build_trunk, group_options, load_group
from bottomup.errors import CheckpointError
from bottomup.methods.targets import map_size
from bottomup.trunks.base import Trunk, load_pretrained

TRUNKS = group_options("trunk")


class StandInHead(nn.Module):
    """The smallest head a trunk can drive: a 1x1 conv to ``prediction_channels`` heatmaps at the finest stride.

    Records the features it is called with so tests can check what the trunk hands to heads.
    """

    def __init__(self, channels: int, prediction_channels: int = 3) -> None:
        super().__init__()
        self.prediction_channels = prediction_channels
        self.conv = nn.Conv2d(channels, prediction_channels, 1)
        self.calls: list[list[Tensor]] = []

    def reinjection(self, prediction: dict[str, Tensor]) -> Tensor:
        return prediction["heatmaps"]

    def forward(self, features: list[Tensor]) -> list[dict[str, Tensor]]:
        self.calls.append(features)
        return [{"heatmaps": self.conv(features[0])}]


def with_heads(trunk: Trunk) -> nn.ModuleList:
    """One stand-in head per stack, attached to ``trunk`` as :class:`~bottomup.model.PoseModel` does."""
    heads = nn.ModuleList(StandInHead(trunk.feature_info.channels[0]) for _ in range(trunk.num_stacks))
    trunk.attach_heads(heads)
    return heads


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def multiply_adds(name: str, height: int, width: int) -> float:
    """Multiply-adds of one forward pass of trunk ``name`` on a ``[1, 3, height, width]`` image.

    Counted on the meta device: FLOPs depend only on shapes, so this is exact and takes no compute.
    """
    with torch.device("meta"):
        trunk = build_trunk(name)
        heads = with_heads(trunk)
        with FlopCounterMode(display=False) as counter:
            trunk.run(torch.zeros(1, 3, height, width), heads)
    # The stand-in heads add a 1x1 conv to 3 channels, under 0.1 % of any trunk's count.
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("name", TRUNKS)
def test_config_names_itself_and_spells_out_every_argument(name: str) -> None:
    cfg = load_group("trunk", name)
    assert cfg.name == name
    parameters = inspect.signature(get_class(cfg._target_).__init__).parameters
    assert set(cfg.keys()) - {"_target_", PRETRAINED} == set(parameters) - {"self"}
    assert cfg[PRETRAINED] is None


@pytest.mark.parametrize("name", TRUNKS)
def test_forward_backward_matches_feature_info(name: str) -> None:
    torch.manual_seed(0)
    trunk = build_trunk(name)
    heads = with_heads(trunk)
    images = torch.randn(2, 3, 64, 64)

    outputs = trunk.run(images, heads)

    assert len(outputs) == trunk.num_stacks
    info = trunk.feature_info
    for head in heads:
        (features,) = head.calls
        assert [f.shape for f in features] == [
            (2, c, 64 // s, 64 // s) for c, s in zip(info.channels, info.strides)]
    for output in outputs:
        assert output["heatmaps"].shape == (2, 3, 16, 16)
    sum(o["heatmaps"].square().mean() for o in outputs).backward()
    first_conv = next(m for m in trunk.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 3
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    # Every layer takes part: an unused fusion or re-injection layer would get no gradient.
    assert [n for n, p in trunk.named_parameters() if p.grad is None or not p.grad.any()] == []


@pytest.mark.parametrize("name", ["hrnet_w8_small", "hourglass_small"])
@pytest.mark.parametrize("height, width", [(72, 88), (66, 69), (65, 71)])
def test_input_sides_not_multiple_of_the_coarsest_stride(name: str, height: int, width: int) -> None:
    """Every trunk's stride-4 maps have the codecs' size, ceil(side / 4), whatever the sides."""
    trunk = build_trunk(name)
    heads = with_heads(trunk)
    outputs = trunk.run(torch.randn(2, 3, height, width), heads)
    assert outputs[-1]["heatmaps"].shape == (2, 3, *reversed(map_size((width, height), 4)))


def test_hrnet_returns_all_branches_on_request() -> None:
    cfg = load_group("trunk", "hrnet_w8_small")
    cfg.return_all_branches = True
    trunk = build_trunk(cfg)
    assert trunk.feature_info.channels == (8, 16, 32, 64)
    assert trunk.feature_info.strides == (4, 8, 16, 32)
    features = trunk(torch.randn(2, 3, 64, 64))
    assert [f.shape for f in features] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]


def test_hrnet_keeps_reference_parameter_names() -> None:
    with torch.device("meta"):
        keys = set(build_trunk("hrnet_w32").state_dict())
    # Names of the reference implementation, so its checkpoints load without renaming.
    assert {"conv1.weight", "bn2.running_var", "layer1.0.downsample.0.weight", "layer1.3.bn3.bias",
            "transition1.0.0.weight", "transition1.1.0.0.weight", "transition3.3.0.1.running_mean",
            "stage2.0.branches.1.3.conv2.weight", "stage3.3.fuse_layers.2.0.1.0.weight",
            "stage4.2.fuse_layers.0.3.1.weight"} <= keys
    # HigherHRNet's last module fuses into the stride-4 branch only.
    assert not any(k.startswith("stage4.2.fuse_layers.1.") for k in keys)


def test_pretrained_weights_load_by_name_from_other_codes_layouts(tmp_path: Path) -> None:
    """A state dict saved by other training code (under ``state_dict``, ``module.``-prefixed, with a classifier and
    a step counter) loads into a fresh trunk tensor for tensor."""
    torch.manual_seed(0)
    source = build_trunk("hrnet_w8_small")
    saved = {f"module.{k}": v for k, v in source.state_dict().items()}
    saved["module.classifier.weight"] = torch.zeros(10, 4)
    torch.save({"state_dict": saved, "epoch": 90}, tmp_path / "imagenet.pth")
    torch.manual_seed(1)
    target = build_trunk("hrnet_w8_small")
    report = load_pretrained(target, tmp_path / "imagenet.pth")
    assert report.loaded == len(source.state_dict()) and report.missing == ()
    assert report.unused == ("classifier.weight",)
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name


def test_pretrained_weights_of_another_trunk_are_refused_by_name(tmp_path: Path) -> None:
    torch.save(build_trunk("hrnet_w8_small").state_dict(), tmp_path / "w8.pth")
    mismatch = r"w8.pth do not fit this trunk \(260 tensors .*\(8, 256, 3, 3\) in the file, \(16, 256, 3, 3\) here"
    with pytest.raises(CheckpointError, match=mismatch):
        load_pretrained(build_trunk("hrnet_w16_small"), tmp_path / "w8.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no tensor named like this trunk's"):
        load_pretrained(build_trunk("hrnet_w8_small"), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pretrained(build_trunk("hrnet_w8_small"), tmp_path / "missing.pth")


def test_hourglass_needs_one_attached_head_per_stack() -> None:
    trunk = build_trunk("hourglass_small")
    heads = nn.ModuleList(StandInHead(64) for _ in range(trunk.num_stacks))
    with pytest.raises(RuntimeError, match="attach_heads"):
        trunk.run(torch.randn(1, 3, 64, 64), heads)
    with pytest.raises(ValueError, match="heads"):
        trunk.attach_heads(heads[:1])


@pytest.mark.parametrize(("name", "published"), [("hrnet_w32", 28.5e6), ("hrnet_w48", 63.6e6)])
def test_hrnet_parameter_count_matches_paper(name: str, published: float) -> None:
    # Published HRNet-W32 / W48 + AE head (a single 1x1 conv of ~1k parameters).
    with torch.device("meta"):
        trunk = build_trunk(name)
    assert count_parameters(trunk) == pytest.approx(published, rel=0.02)


def test_hrnet_w32_flops_match_papers() -> None:
    # HigherHRNet's table: AE with HRNet-W32 at 512x512, 38.9 GFLOPs (multiply-adds).
    assert multiply_adds("hrnet_w32", 512, 512) / 1e9 == pytest.approx(38.9, rel=0.05)
    # The HRNet paper's own counter divides by 2^30: W32 and W48 at 256x192 are 7.1 and 14.6 GFLOPs.
    assert multiply_adds("hrnet_w32", 256, 192) / 2 ** 30 == pytest.approx(7.1, rel=0.01)
    assert multiply_adds("hrnet_w48", 256, 192) / 2 ** 30 == pytest.approx(14.6, rel=0.01)
