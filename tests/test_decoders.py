"""Decoders: round trips through every codec, custom skeletons, batches, devices and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from bottomup.decoders import AEDecoder, HigherHRNetDecoder, PAFDecoder, SPMDecoder
from bottomup.methods.ae import AECodec
from bottomup.methods.higherhrnet import HigherHRNetCodec
from bottomup.methods.openpose import PAFCodec
from bottomup.methods.spm import SPMCodec
from bottomup.skeletons import COCO, COCO_LIMBS, Skeleton
from people import crossing_pair, crowd, person

CODECS = {
    "openpose": lambda skeleton: PAFCodec(skeleton),
    "openpose_coco_links": lambda skeleton: PAFCodec(skeleton, limbs=COCO_LIMBS),
    "ae": lambda skeleton: AECodec(skeleton),
    "higherhrnet": lambda skeleton: HigherHRNetCodec(skeleton),
    "spm": lambda skeleton: SPMCodec(skeleton),
    "spm_hierarchical": lambda skeleton: SPMCodec(skeleton, hierarchical=True),
    "spm_regressed": lambda skeleton: SPMCodec(skeleton, decoder={"snap": None}),
}
SIZE = (512, 512)
# Ideal maps carry sub-pixel centres, so decoded keypoints land within a fraction of an input pixel.
TOLERANCE = 0.25
# Float16 maps (mixed-precision heads) move refined peaks by a few thousandths of an input pixel (0.007 measured).
HALF_TOLERANCE = 0.05


def decode_ideal(codec, people: np.ndarray, size=SIZE):
    outputs = codec.ideal_outputs(people, size)
    return codec.decode({k: v[None] for k, v in outputs.items()})[0]


def assert_recovers(people: np.ndarray, poses, tolerance: float = TOLERANCE) -> None:
    """Every person is decoded once, all its labelled joints within ``tolerance`` pixels."""
    assert len(poses) == len(people), f"decoded {len(poses)} people, expected {len(people)}"
    decoded = poses.keypoints.numpy()
    used = set()
    for gt in people:
        labelled = gt[:, 2] > 0
        errors = np.abs(decoded[:, labelled, :2] - gt[None, labelled, :2]).max(axis=(1, 2))
        best = int(errors.argmin())
        assert errors[best] < tolerance, f"person off by {errors[best]:.3f} px"
        assert best not in used, "two people decoded as one"
        used.add(best)
        assert (decoded[best, labelled, 2] > 0).all()


@pytest.mark.parametrize("method", CODECS)
def test_round_trip_one_person(method):
    people = person((256.0, 280.0), 250.0)[None]
    assert_recovers(people, decode_ideal(CODECS[method](COCO), people))


@pytest.mark.parametrize("method", CODECS)
def test_round_trip_crossing_limbs(method):
    people = crossing_pair()
    assert_recovers(people, decode_ideal(CODECS[method](COCO), people))


@pytest.mark.parametrize("method", CODECS)
def test_round_trip_crowd_of_15(method):
    people = crowd(15)
    assert_recovers(people, decode_ideal(CODECS[method](COCO), people))


def partially_labelled() -> np.ndarray:
    """Three people missing joints that cut the 19 COCO links apart (an elbow, a knee, a hip and a wrist) but
    not the redundant limb graph."""
    missing = ([7, 14], [0, 1], [12, 9])
    people = []
    for i, gone in enumerate(missing):
        visible = np.ones(17, dtype=bool)
        visible[gone] = False
        people.append(person((120.0 + 140 * i, 280.0), 220.0, np.random.default_rng(i), visible))
    return np.stack(people)


@pytest.mark.parametrize("method", [m for m in CODECS if m != "openpose_coco_links"])
def test_partially_labelled_people(method):
    people = partially_labelled()
    assert_recovers(people, decode_ideal(CODECS[method](COCO), people))


def test_coco_links_split_people_the_redundant_graph_keeps_whole():
    people = partially_labelled()
    split = decode_ideal(CODECS["openpose_coco_links"](COCO), people)
    assert len(split) > len(people)
    assert_recovers(people, decode_ideal(CODECS["openpose"](COCO), people))


def test_paf_shares_a_peak_two_people_hold():
    """Two people's left wrists at one point make one heatmap peak: assembly gives it to one person, and sharing
    gives it to the other through its own elbow's limb field."""
    a, b = person((180.0, 300.0), 220.0), person((350.0, 300.0), 220.0)
    a[9, :2] = b[9, :2] = (265.0, 240.0)
    a[7, :2], b[7, :2] = (225.0, 250.0), (305.0, 250.0)
    people = np.stack([a, b])
    assert_recovers(people, decode_ideal(PAFCodec(COCO), people))
    alone = decode_ideal(PAFCodec(COCO, decoder={"share_joints": False}), people)
    assert len(alone) == 2
    assert sorted((alone.keypoints[:, 9, 2] > 0).tolist()) == [False, True]


STAR = Skeleton(name="star", keypoints=("centre", "left_arm", "right_arm", "top", "bottom"),
                limbs=((0, 1), (0, 2), (0, 3), (0, 4)), flip_pairs=((1, 2),))


@pytest.mark.parametrize("method", [m for m in CODECS if m != "openpose_coco_links"])
def test_custom_skeleton(method):
    rng = np.random.default_rng(1)
    people = []
    for cx, cy in ((150.0, 150.0), (350.0, 180.0), (250.0, 380.0)):
        centre = np.array([cx, cy])
        arms = [centre + rng.uniform(30, 60) * np.array(d) for d in ((-1, 0.2), (1, 0.1), (0.1, -1), (-0.1, 1))]
        people.append(np.concatenate([np.stack([centre, *arms]), np.full((5, 1), 2.0)], axis=1))
    people = np.stack(people).astype(np.float32)
    codec = CODECS[method](STAR)
    assert_recovers(people, decode_ideal(codec, people))


def test_spm_snap_recovers_joints_from_rough_displacements():
    """Displacements off by ~1.5 map pixels put joints 6 input pixels off; snapping puts them back on the peaks."""
    people = crowd(6, seed=3)
    codec = SPMCodec(COCO)
    outputs = {k: v[None] for k, v in codec.ideal_outputs(people, SIZE).items()}
    noise = torch.randn(outputs["displacements"].shape, generator=torch.Generator().manual_seed(0))
    outputs["displacements"] = outputs["displacements"] + 1.5 * noise
    with pytest.raises(AssertionError, match="off by"):
        assert_recovers(people, SPMCodec(COCO, decoder={"snap": None}).decode(outputs)[0])
    assert_recovers(people, codec.decode(outputs)[0])


def gaussian_map(size: int, peaks: list[tuple[float, float, float]], sigma: float = 1.5) -> torch.Tensor:
    """``[size, size]`` maximum of Gaussians of the given ``(x, y, height)``."""
    grid = torch.arange(size, dtype=torch.float32)
    out = torch.zeros(size, size)
    for x, y, height in peaks:
        blob = height * torch.exp(-((grid[None] - x) ** 2 + (grid[:, None] - y) ** 2) / (2 * sigma**2))
        out = torch.maximum(out, blob)
    return out


def test_spm_snap_weighs_peak_strength_against_distance():
    """One star person, root at (32, 32), joints regressed 10 px out (size 20, so snap sigma 0.5 * 20 = 10 px).
    Joint by joint: a strong peak 10 px away beats a faint one 2 px away; a faint one 2 px away beats a strong one
    25 px away; a peak 35 px away (beyond 3 sigma) is ignored; with no peak the regressed position stays."""
    size = 64
    offsets = torch.tensor([(0.0, 0.0), (-10.0, 0.0), (10.0, 0.0), (0.0, -10.0), (0.0, 10.0)])
    displacements = offsets.reshape(-1)[:, None, None].expand(10, size, size)
    heatmaps = torch.stack([
        gaussian_map(size, [(32, 32, 1.0)]),
        gaussian_map(size, [(22, 34, 0.3), (22, 42, 1.0)]),
        gaussian_map(size, [(44, 32, 0.3), (42, 57, 1.0)]),
        gaussian_map(size, [(32, 57, 1.0)]),
        torch.zeros(size, size),
    ])
    root = gaussian_map(size, [(32, 32, 1.0)])
    poses = SPMDecoder(STAR, snap=0.5)(root[None, None], displacements[None], heatmaps[None])[0]
    assert len(poses) == 1
    expected = torch.tensor([(32.0, 32.0), (22.0, 42.0), (44.0, 32.0), (32.0, 22.0), (32.0, 42.0)])
    torch.testing.assert_close(poses.keypoints[0, :, :2], expected, atol=1e-3, rtol=0)
    assert poses.keypoints[0, 4, 2] == 0  # no heatmap evidence for the regressed joint


@pytest.mark.parametrize("options, filled", [
    ({}, (7.0, 3.0)),                         # the weaker peak whose tag agrees
    ({"fill_candidates": 1}, (3.0, 7.0)),     # only the strongest peak is a candidate
    ({"fill_threshold": 0.05}, (3.0, 7.0)),   # the agreeing peak is below the threshold
    ({"fill_threshold": 0.09}, None),         # no candidate left: the joint stays unplaced
])
def test_ae_fill_respects_its_threshold_and_candidate_count(options, filled):
    """Joint b of the one person is found only by filling, from two peaks below the detection threshold."""
    skeleton = Skeleton(name="pair", keypoints=("a", "b"), limbs=((0, 1),))
    heat = torch.stack([gaussian_map(16, [(5, 5, 0.9)]), gaussian_map(16, [(3, 7, 0.08), (7, 3, 0.04)])])
    tags = torch.zeros(2, 16, 16)
    tags[1, 7, 3] = 2.0  # the stronger b peak's tag disagrees with the person's (0)
    poses = AEDecoder(skeleton, refine="none", **options)(heat[None], tags[None])[0]
    assert len(poses) == 1
    b = poses.keypoints[0, 1]
    if filled is None:
        assert b[2] == 0
    else:
        assert b[:2].tolist() == list(filled) and b[2] > 0


def test_spm_root_and_snap_thresholds_and_limits_stay_separate():
    """Roots and joint peaks come from one search run with the looser of the two settings: each use must still apply
    its own threshold and top-k. Three star people (roots 0.9, 0.6, 0.3); each joint's heatmap peak lies 2 px right
    of where the displacements put it, 0.4 high for the first person and 0.3 for the others."""
    size = 64
    roots = [(16.0, 16.0, 0.9), (48.0, 48.0, 0.6), (16.0, 48.0, 0.3)]
    offsets = torch.tensor([(0.0, 0.0), (-10.0, 0.0), (10.0, 0.0), (0.0, -10.0), (0.0, 10.0)])
    root = gaussian_map(size, roots)
    displacements = offsets.reshape(-1)[:, None, None].expand(10, size, size)
    heatmaps = torch.stack([gaussian_map(size, [(x + dx + 2, y + dy, 0.4 if i == 0 else 0.3)
                                                for i, (x, y, _) in enumerate(roots)]) for dx, dy in offsets.tolist()])

    def decode(**options):
        poses = SPMDecoder(STAR, **options)(root[None, None], displacements[None], heatmaps[None])[0]
        centre = poses.keypoints[:, 0]
        return poses.keypoints[torch.argsort(centre[:, 1] * 100 + centre[:, 0])]  # by row, then column

    regressed = torch.tensor([[(x + dx, y + dy) for dx, dy in offsets.tolist()] for x, y, _ in sorted(roots)])
    snapped = regressed + torch.tensor([2.0, 0.0])
    torch.testing.assert_close(decode()[..., :2], snapped, atol=1e-3, rtol=0)
    assert len(decode(root_threshold=0.5)) == 2  # the 0.3 root is above the snap threshold only
    torch.testing.assert_close(decode(snap_threshold=0.5)[..., :2], regressed, atol=1e-3, rtol=0)
    # top_k=1: only the 0.4 peaks are candidates; the others' joints are too far from them and stay where regressed.
    first = [i for i, (x, y, _) in enumerate(sorted(roots)) if (x, y) == (16.0, 16.0)][0]
    expected = regressed.clone()
    expected[first] = snapped[first]
    torch.testing.assert_close(decode(top_k=1)[..., :2], expected, atol=1e-3, rtol=0)


def test_spm_without_heatmaps_keeps_regressed_joints():
    """Snapping is on by default but needs heatmaps: without them the regressed joints stand, here 1.5 map px right
    of the true ones."""
    people = crowd(3, seed=1)
    codec = SPMCodec(COCO, with_heatmaps=False)
    assert codec.decoder.snap is not None
    outputs = codec.ideal_outputs(people, SIZE)
    outputs["displacements"][0::2] += 1.5
    shifted = people.copy()
    shifted[..., 0] += 1.5 * codec.stride
    assert_recovers(shifted, codec.decode({k: v[None] for k, v in outputs.items()})[0])
    with pytest.raises(ValueError, match="snap must be positive"):
        SPMDecoder(COCO, snap=0.0)


@pytest.mark.parametrize("method", CODECS)
def test_batch_with_different_person_counts(method):
    codec = CODECS[method](COCO)
    images = [crowd(4, seed=2), np.zeros((0, 17, 3), np.float32), person((256.0, 256.0), 250.0)[None]]
    outputs = [codec.ideal_outputs(p, SIZE) for p in images]
    batch = {k: torch.stack([o[k] for o in outputs]) for k in outputs[0]}
    decoded = codec.decode(batch)
    assert [len(p) for p in decoded] == [4, 0, 1]
    for people, poses in zip(images, decoded):
        if len(people):
            assert_recovers(people, poses)


@pytest.mark.parametrize("method", CODECS)
def test_batch_decodes_like_its_images_one_by_one(method):
    """A crowd beside sparse images: batching must not change anyone's poses (OpenPose scores the candidate pairs of
    the whole batch as one list, the others pad per-joint peak lists to the batch's longest)."""
    codec = CODECS[method](COCO)
    images = [person((200.0, 260.0), 240.0)[None], crowd(12, seed=8), crossing_pair(), crowd(3, seed=9)]
    outputs = [{k: v[None] for k, v in codec.ideal_outputs(p, SIZE).items()} for p in images]
    batched = codec.decode({k: torch.cat([o[k] for o in outputs]) for k in outputs[0]})
    for single, together in zip((codec.decode(o)[0] for o in outputs), batched):
        torch.testing.assert_close(together.keypoints, single.keypoints, atol=1e-5, rtol=0)
        torch.testing.assert_close(together.scores, single.scores, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", CODECS)
def test_scores_sorted_and_coordinates_in_map_grid(method):
    codec = CODECS[method](COCO)
    people = crowd(6, seed=5)
    outputs = codec.ideal_outputs(people, SIZE)
    first = next(iter(outputs.values()))
    poses = codec.decode_maps({k: v[None] for k, v in outputs.items()})[0]
    assert torch.all(poses.scores[:-1] >= poses.scores[1:])
    h, w = first.shape[-2:]
    assert poses.keypoints[..., 0].min() >= -0.5 and poses.keypoints[..., 0].max() <= w - 0.5
    assert poses.keypoints[..., 1].min() >= -0.5 and poses.keypoints[..., 1].max() <= h - 0.5


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", CODECS)
def test_cpu_and_gpu_give_the_same_poses(method):
    codec = CODECS[method](COCO)
    outputs = codec.ideal_outputs(crowd(8, seed=4), SIZE)
    batch = {k: v[None] for k, v in outputs.items()}
    cpu = codec.decode(batch)[0]
    gpu = codec.decode({k: v.cuda() for k, v in batch.items()})[0]
    assert gpu.keypoints.is_cuda
    torch.testing.assert_close(gpu.keypoints.cpu(), cpu.keypoints, atol=1e-3, rtol=0)
    torch.testing.assert_close(gpu.scores.cpu(), cpu.scores, atol=1e-4, rtol=0)


def test_flip_outputs_round_trip():
    """Maps of a mirrored image, flipped back, decode to the original people (every method)."""
    people = crowd(3, seed=6)
    mirrored = people.copy()
    mirrored[..., 0] = SIZE[0] - 1 - mirrored[..., 0]
    mirrored = mirrored[:, list(COCO.flip_index)]
    for make in CODECS.values():
        codec = make(COCO)
        flipped = codec.flip_outputs({k: v[None] for k, v in codec.ideal_outputs(mirrored, SIZE).items()})
        direct = {k: v[None] for k, v in codec.ideal_outputs(people, SIZE).items()}
        torch.testing.assert_close(flipped["heatmaps"], direct["heatmaps"], atol=1e-5, rtol=0)
        assert_recovers(people, codec.decode(flipped)[0])
        assert_recovers(people, codec.decode(codec.fuse([direct, flipped]))[0])


# --- bad input -------------------------------------------------------------------------------------------------

def test_wrong_rank_names_the_argument_and_shape():
    with pytest.raises(ValueError, match=r"heatmaps must be \[B, K, H, W\], got shape \(17, 8, 8\)"):
        AEDecoder(COCO)(torch.zeros(17, 8, 8), torch.zeros(1, 17, 8, 8))


def test_channel_count_disagreeing_with_skeleton():
    with pytest.raises(ValueError, match=r"heatmaps has 18 channels.*expected 17"):
        PAFDecoder(COCO)(torch.zeros(1, 18, 8, 8), torch.zeros(1, 66, 8, 8))
    with pytest.raises(ValueError, match=r"pafs has 38 channels.*expected 66"):
        PAFDecoder(COCO)(torch.zeros(1, 17, 8, 8), torch.zeros(1, 38, 8, 8))
    with pytest.raises(ValueError, match=r"displacements has 17 channels.*expected 34"):
        SPMDecoder(COCO)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 17, 8, 8))


def test_mismatched_sizes_between_inputs():
    with pytest.raises(ValueError, match=r"tags has shape \(1, 17, 9, 8\) but heatmaps has shape \(1, 17, 8, 8\)"):
        AEDecoder(COCO)(torch.zeros(1, 17, 8, 8), torch.zeros(1, 17, 9, 8))
    with pytest.raises(ValueError, match=r"heatmaps_highres has shape \(1, 17, 8, 8\).*spatial size \(16, 16\)"):
        HigherHRNetDecoder(COCO)(torch.zeros(1, 17, 8, 8), torch.zeros(1, 17, 8, 8), torch.zeros(1, 17, 8, 8))


def test_bad_decoder_options():
    with pytest.raises(ValueError, match="limb"):
        PAFDecoder(COCO, limbs=[(0, 17)])
    with pytest.raises(ValueError, match="NMS kernel"):
        AEDecoder(COCO, nms_kernel=4)(torch.zeros(1, 17, 8, 8), torch.zeros(1, 17, 8, 8))
    with pytest.raises(ValueError, match="parents"):
        SPMDecoder(COCO, parents=[0] * 17)


@pytest.mark.parametrize("make", [
    lambda m: AEDecoder(COCO)(m(17), m(17)),
    lambda m: HigherHRNetDecoder(COCO)(m(17), m(17), m(17, 2)),
    lambda m: PAFDecoder(COCO)(m(17), m(66)),
    lambda m: SPMDecoder(COCO)(m(1), m(34), m(17)),
])
def test_empty_maps_give_no_people(make):
    poses = make(lambda c, f=1: torch.zeros(2, c, 16 * f, 16 * f))
    assert [len(p) for p in poses] == [0, 0]
    assert poses[0].keypoints.shape == (0, 17, 3)


@pytest.mark.parametrize("make", [
    lambda m: AEDecoder(COCO)(m(17), m(17)),
    lambda m: HigherHRNetDecoder(COCO)(m(17), m(17), m(17, 2)),
    lambda m: PAFDecoder(COCO)(m(17), m(66)),
    lambda m: SPMDecoder(COCO)(m(1), m(34), m(17)),
    lambda m: SPMDecoder(COCO)(m(1), m(34)),
])
def test_empty_batch_gives_empty_list(make):
    assert make(lambda c, f=1: torch.zeros(0, c, 16 * f, 16 * f)) == []


def test_non_finite_maps_give_finite_poses():
    maps = AECodec(COCO).ideal_outputs(crowd(3), SIZE)
    heat, tags = maps["heatmaps"][None].clone(), maps["tags"][None].clone()
    heat[0, 0, :10] = float("nan")
    heat[0, 1, 5, 5] = float("inf")
    tags[0, 2] = float("-inf")
    poses = AEDecoder(COCO)(heat, tags)[0]
    assert len(poses) >= 3
    assert torch.isfinite(poses.keypoints).all() and torch.isfinite(poses.scores).all()


def test_float16_maps_decode_like_float32():
    codec = PAFCodec(COCO)
    outputs = {k: v[None] for k, v in codec.ideal_outputs(crowd(4), SIZE).items()}
    full = codec.decode(outputs)[0]
    half = codec.decode({k: v.half() for k, v in outputs.items()})[0]
    assert len(half) == len(full) == 4
    torch.testing.assert_close(half.keypoints, full.keypoints, atol=HALF_TOLERANCE, rtol=0)


@pytest.mark.parametrize("method", CODECS)
def test_channels_last_maps_decode_like_contiguous(method):
    """A network run in channels-last memory format hands the decoders maps with permuted strides."""
    codec = CODECS[method](COCO)
    images = [codec.ideal_outputs(people, SIZE) for people in (crowd(5, seed=3), crossing_pair())]
    batch = {k: torch.stack([o[k] for o in images]) for k in images[0]}
    strided = {k: v.movedim(1, -1).contiguous().movedim(-1, 1) for k, v in batch.items()}
    assert not all(v.is_contiguous() for v in strided.values())
    for expected, got in zip(codec.decode(batch), codec.decode(strided), strict=True):
        torch.testing.assert_close(got.keypoints, expected.keypoints, atol=0, rtol=0)
        torch.testing.assert_close(got.scores, expected.scores, atol=0, rtol=0)


@pytest.mark.parametrize("method", CODECS)
def test_channel_slices_of_one_output_decode_like_separate_maps(method):
    """Heads often emit one tensor that callers slice into the decoder's arguments: non-contiguous views."""
    codec = CODECS[method](COCO)
    images = [codec.ideal_outputs(people, SIZE) for people in (crowd(4, seed=6), person((256.0, 250.0), 260.0)[None])]
    batch = {k: torch.stack([o[k] for o in images]) for k in images[0]}
    same_size = [k for k in batch if batch[k].shape[-2:] == next(iter(batch.values())).shape[-2:]]
    combined = torch.cat([batch[k] for k in same_size], dim=1)
    sliced = dict(batch, **dict(zip(same_size, combined.split([batch[k].shape[1] for k in same_size], dim=1))))
    assert not all(sliced[k].is_contiguous() for k in same_size)
    for expected, got in zip(codec.decode(batch), codec.decode(sliced), strict=True):
        torch.testing.assert_close(got.keypoints, expected.keypoints, atol=0, rtol=0)
        torch.testing.assert_close(got.scores, expected.scores, atol=0, rtol=0)


def test_import_stays_light():
    code = ("import sys, bottomup.decoders; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('hydra', 'cv2', 'omegaconf', 'pycocotools')"
            " or m.startswith(('bottomup.data', 'bottomup.methods', 'bottomup.evaluation', 'bottomup.trunks'))]; "
            "print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
