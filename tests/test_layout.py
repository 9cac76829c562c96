"""Foreign channel layouts: another model's maps decode with our decoder exactly as our own layout does."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bottomup.decoders.layout import CMU18, TFPOSE_MOBILENET, ChannelLayout, convert
from bottomup.methods.openpose import PAFCodec
from bottomup.poses import Poses
from bottomup.skeletons import COCO
from people import crowd

SHARED = Path(os.environ.get("BOTTOMUP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MAPS = SHARED / "tfpose-maps" / "train2017"
needs_maps = pytest.mark.skipif(not MAPS.is_dir(), reason=f"shared tf-pose maps not found at {MAPS}")


def cmu_people(coco_people: np.ndarray) -> np.ndarray:
    """COCO-17 people as CMU-18: same joints by name plus a neck between the shoulders."""
    out = np.zeros((len(coco_people), CMU18.num_keypoints, 3), np.float32)
    for j, name in enumerate(CMU18.keypoints):
        if name == "neck":
            shoulders = coco_people[:, [COCO.index("left_shoulder"), COCO.index("right_shoulder")]]
            out[:, j, :2] = shoulders[..., :2].mean(1)
            out[:, j, 2] = 2.0
        else:
            out[:, j] = coco_people[:, COCO.index(name)]
    return out


def to_raw(layout: ChannelLayout, heatmaps: torch.Tensor, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our ordered maps ``[K, H, W]``, ``[2L, H, W]`` written the way the foreign model lays them out."""
    k, h, w = heatmaps.shape
    raw_heat = torch.zeros(max(layout.heatmap_channels) + 2, h, w)  # one extra channel, like a background map
    raw_heat[list(layout.heatmap_channels)] = heatmaps
    raw_heat[-1] = 1.0 - heatmaps.amax(0)
    raw_fields = torch.zeros(1 + max(c for xy in layout.field_channels for c in xy), h, w)
    for limb, (cx, cy) in enumerate(layout.field_channels):
        raw_fields[cx], raw_fields[cy] = fields[2 * limb], fields[2 * limb + 1]
    return raw_heat[None], raw_fields[None]


def test_foreign_layout_round_trips():
    people = cmu_people(crowd(5, seed=9))
    codec = PAFCodec(CMU18, limbs=TFPOSE_MOBILENET.limbs)
    maps = codec.ideal_outputs(people, (512, 512))
    ours = codec.decoder(maps["heatmaps"][None], maps["pafs"][None])[0]
    raw_heat, raw_fields = to_raw(TFPOSE_MOBILENET, maps["heatmaps"], maps["pafs"])
    theirs = TFPOSE_MOBILENET.decode(TFPOSE_MOBILENET.decoder(), raw_heat, raw_fields)[0]
    assert len(ours) == 5
    torch.testing.assert_close(theirs.keypoints, ours.keypoints)
    torch.testing.assert_close(theirs.scores, ours.scores)


def test_convert_by_name_drops_the_neck_and_keeps_coco_order():
    kpts = torch.arange(2 * 18 * 3, dtype=torch.float32).view(2, 18, 3)
    coco = convert(Poses(kpts, torch.tensor([0.9, 0.5])), CMU18, COCO)
    assert coco.keypoints.shape == (2, 17, 3)
    for j, name in enumerate(COCO.keypoints):
        torch.testing.assert_close(coco.keypoints[:, j], kpts[:, CMU18.index(name)])
    back = convert(coco, COCO, CMU18)
    assert back.keypoints[:, CMU18.index("neck"), 2].eq(0).all()


def test_layout_errors_name_the_problem():
    with pytest.raises(ValueError, match="heatmap_channels has 3 entries for the 18 keypoints"):
        ChannelLayout(CMU18, (0, 1, 2), TFPOSE_MOBILENET.limbs, TFPOSE_MOBILENET.field_channels)
    with pytest.raises(ValueError, match=r"pafs has 20 channels .* reads channel 37"):
        TFPOSE_MOBILENET.fields(torch.zeros(1, 20, 8, 8))


def load_maps(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(MAPS / name) as f:
        return (torch.from_numpy(f["heatmaps"].astype(np.float32))[None],
                torch.from_numpy(f["pafs"].astype(np.float32))[None])


# Two real outputs: a group photo and a single person. The network finds most of a body in each.
REAL_FILES = ("174375.npz", "183872.npz")


@needs_maps
def test_real_map_files_decode_to_people():
    decoder = TFPOSE_MOBILENET.decoder()
    for name in REAL_FILES:
        poses = TFPOSE_MOBILENET.decode(decoder, *load_maps(name))[0]
        assert torch.isfinite(poses.keypoints).all()
        assert torch.all(poses.scores[:-1] >= poses.scores[1:])
        assert (poses.keypoints[0, :, 2] > 0).sum() >= 14, "the best person should be nearly complete"


@needs_maps
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_map_files_decode_the_same_on_gpu():
    decoder = TFPOSE_MOBILENET.decoder()
    for name in REAL_FILES:
        heat, pafs = load_maps(name)
        cpu = TFPOSE_MOBILENET.decode(decoder, heat, pafs)[0]
        gpu = TFPOSE_MOBILENET.decode(decoder, heat.cuda(), pafs.cuda())[0]
        torch.testing.assert_close(gpu.keypoints.cpu(), cpu.keypoints, atol=1e-3, rtol=0)
        torch.testing.assert_close(gpu.scores.cpu(), cpu.scores, atol=1e-4, rtol=0)
