"""Property-based tests: no map a network can emit makes a decoder crash or return something unusable.

For random shapes, skeletons and values (including NaN, +-Inf, all-zero and all-equal maps) every decoder must
return one finite ``Poses`` per image, keypoints inside the map area, scores sorted, and the same answer twice.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bottomup.decoders import AEDecoder, HigherHRNetDecoder, PAFDecoder, SPMDecoder
from bottomup.skeletons import Skeleton

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILLS = ("random", "zeros", "constant", "nan", "inf", "mixed", "peaky")


@st.composite
def skeletons(draw) -> Skeleton:
    k = draw(st.integers(1, 6))
    names = tuple(f"joint{i}" for i in range(k))
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    limbs = draw(st.lists(st.sampled_from(pairs), min_size=1 if pairs else 0, max_size=6, unique=True)) if pairs else []
    return Skeleton(name="random", keypoints=names, limbs=tuple(limbs))


def maps(draw, shape: tuple[int, ...], fill: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if fill == "zeros":
        return torch.zeros(shape)
    if fill == "constant":
        return torch.full(shape, draw(st.floats(-2, 2)))
    t = torch.rand(shape, generator=gen) * 2 - 0.5
    if fill == "peaky":
        t = (t > 1.3).float() * t
    if fill in ("nan", "mixed"):
        t[torch.rand(shape, generator=gen) < 0.2] = float("nan")
    if fill in ("inf", "mixed"):
        t[torch.rand(shape, generator=gen) < 0.1] = float("inf")
        t[torch.rand(shape, generator=gen) < 0.1] = float("-inf")
    return t


def check(poses, batch: int, k: int, h: int, w: int) -> None:
    assert len(poses) == batch
    for p in poses:
        assert p.keypoints.shape[1:] == (k, 3)
        assert torch.isfinite(p.keypoints).all() and torch.isfinite(p.scores).all()
        assert (p.keypoints[..., 0] >= -0.5).all() and (p.keypoints[..., 0] <= w - 0.5).all()
        assert (p.keypoints[..., 1] >= -0.5).all() and (p.keypoints[..., 1] <= h - 0.5).all()
        assert torch.all(p.scores[:-1] >= p.scores[1:])


def same(a, b) -> None:
    for x, y in zip(a, b):
        assert torch.equal(x.keypoints, y.keypoints) and torch.equal(x.scores, y.scores)


@SETTINGS
@given(data=st.data(), skeleton=skeletons(), b=st.integers(1, 2), h=st.integers(1, 20), w=st.integers(1, 20),
       fill=st.sampled_from(FILLS), seed=st.integers(0, 2**16), kernel=st.sampled_from([1, 3, 5]))
def test_paf_decoder_never_fails(data, skeleton, b, h, w, fill, seed, kernel):
    k, n_limbs = skeleton.num_keypoints, len(skeleton.limbs)
    if n_limbs == 0:
        return
    heat = maps(data.draw, (b, k, h, w), fill, seed)
    pafs = maps(data.draw, (b, 2 * n_limbs, h, w), fill, seed + 1)
    decoder = PAFDecoder(skeleton, nms_kernel=kernel, detection_threshold=0.05)
    first = decoder(heat, pafs)
    check(first, b, k, h, w)
    same(first, decoder(heat, pafs))


@SETTINGS
@given(data=st.data(), skeleton=skeletons(), b=st.integers(1, 2), h=st.integers(1, 20), w=st.integers(1, 20),
       d=st.integers(1, 3), fill=st.sampled_from(FILLS), seed=st.integers(0, 2**16))
def test_ae_decoder_never_fails(data, skeleton, b, h, w, d, fill, seed):
    k = skeleton.num_keypoints
    heat = maps(data.draw, (b, k, h, w), fill, seed)
    tags = maps(data.draw, (b, k, d, h, w), fill, seed + 1)
    decoder = AEDecoder(skeleton, detection_threshold=0.05)
    first = decoder(heat, tags)
    check(first, b, k, h, w)
    same(first, decoder(heat, tags))


@SETTINGS
@given(data=st.data(), skeleton=skeletons(), b=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12),
       fill=st.sampled_from(FILLS), seed=st.integers(0, 2**16))
def test_higherhrnet_decoder_never_fails(data, skeleton, b, h, w, fill, seed):
    k = skeleton.num_keypoints
    heat = maps(data.draw, (b, k, h, w), fill, seed)
    tags = maps(data.draw, (b, k, h, w), fill, seed + 1)
    high = maps(data.draw, (b, k, 2 * h, 2 * w), fill, seed + 2)
    decoder = HigherHRNetDecoder(skeleton, detection_threshold=0.05)
    first = decoder(heat, tags, high)
    check(first, b, k, h, w)
    same(first, decoder(heat, tags, high))


@SETTINGS
@given(data=st.data(), skeleton=skeletons(), b=st.integers(1, 2), h=st.integers(1, 20), w=st.integers(1, 20),
       fill=st.sampled_from(FILLS), seed=st.integers(0, 2**16), hierarchical=st.booleans(),
       with_heatmaps=st.booleans())
def test_spm_decoder_never_fails(data, skeleton, b, h, w, fill, seed, hierarchical, with_heatmaps):
    k = skeleton.num_keypoints
    root = maps(data.draw, (b, 1, h, w), fill, seed)
    disp = maps(data.draw, (b, 2 * k, h, w), fill, seed + 1) * 10
    heat = maps(data.draw, (b, k, h, w), fill, seed + 2) if with_heatmaps else None
    parents = [-1] + list(range(k - 1)) if hierarchical else None
    decoder = SPMDecoder(skeleton, parents=parents, root_threshold=0.05)
    first = decoder(root, disp, heat)
    check(first, b, k, h, w)
    same(first, decoder(root, disp, heat))


def test_all_equal_maps_do_not_explode_into_peaks():
    """A constant map has one plateau, not one peak per pixel."""
    skeleton = Skeleton(name="one", keypoints=("a", "b"), limbs=((0, 1),))
    poses = AEDecoder(skeleton, detection_threshold=0.1)(torch.full((1, 2, 16, 16), 0.5), torch.zeros(1, 2, 16, 16))
    assert len(poses[0]) <= 2
    assert np.isfinite(poses[0].keypoints.numpy()).all()
