"""Shared decoder mechanics with known answers: peak NMS, sub-pixel refinement, aggregation, matching, OKS, NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bottomup.decoders import peaks as peaks_module
from bottomup.decoders.matching import match_max, oks_matrix, pose_nms
from bottomup.decoders.peaks import AggregatedMaps, find_peaks, max_filter, sample, sample_planes
from bottomup.methods.targets import render_heatmaps


def gaussians(points, size=(32, 32), sigma=2.0) -> torch.Tensor:
    kpts = torch.tensor([[[x, y, 2.0]] for x, y in points], dtype=torch.float32)
    return render_heatmaps(kpts, size[0], size[1], sigma)[0][None]


def test_subpixel_peaks_are_exact():
    points = [(5.3, 7.8), (20.0, 20.0), (12.49, 25.51)]
    peaks = find_peaks(gaussians(points), kernel=3, threshold=0.1)
    found = sorted(zip(peaks.x[0, 0][peaks.valid[0, 0]].tolist(), peaks.y[0, 0][peaks.valid[0, 0]].tolist()))
    assert len(found) == len(points)
    for (x, y), (fx, fy) in zip(sorted(points), found):
        assert fx == pytest.approx(x, abs=1e-3) and fy == pytest.approx(y, abs=1e-3)


def test_peak_exactly_between_pixels_is_found_once():
    peaks = find_peaks(gaussians([(10.5, 10.0)]), kernel=3, threshold=0.1)
    assert int(peaks.valid.sum()) == 1
    assert peaks.x[0, 0, 0].item() == pytest.approx(10.5, abs=1e-3)


def test_plateau_gives_one_peak_and_nan_is_ignored():
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 2:4, 2:5] = 0.7
    maps[0, 0, 6, 6] = float("nan")
    peaks = find_peaks(maps, kernel=3, threshold=0.1, refine="none")
    assert int(peaks.valid.sum()) == 1
    # A NaN pixel neither is a peak nor suppresses its neighbour, on the sparse and on the dense path.
    maps[0, 0, 6, 5] = 0.5
    for threshold in (0.1, -1.0):
        peaks = find_peaks(maps, kernel=3, threshold=threshold, refine="none")
        found = set(peaks.index[peaks.valid].tolist())
        assert 6 * 8 + 5 in found and 6 * 8 + 6 not in found


def test_nms_kernel_separates_close_peaks():
    maps = gaussians([(10.0, 10.0), (13.0, 10.0)], sigma=1.0)
    assert int(find_peaks(maps, kernel=3).valid.sum()) == 2
    assert int(find_peaks(maps, kernel=7).valid.sum()) == 1


def test_top_k_keeps_the_strongest():
    maps = torch.zeros(1, 1, 16, 16)
    for i, v in enumerate([0.2, 0.9, 0.5, 0.7]):
        maps[0, 0, 2 + 4 * i, 3] = v
    peaks = find_peaks(maps, kernel=3, threshold=0.1, max_peaks=2, refine="none")
    assert peaks.score[0, 0].tolist() == pytest.approx([0.9, 0.7])
    assert peaks.y[0, 0].tolist() == [6.0, 14.0]


def test_empty_batch_or_no_channels_give_empty_peaks():
    for shape in ((0, 17, 8, 8), (2, 0, 8, 8)):
        peaks = find_peaks(torch.zeros(shape))
        assert peaks.x.shape == peaks.valid.shape == (*shape[:2], 0)


def test_equal_peaks_rank_in_row_major_order_on_every_reader():
    high, low = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 8, 8)
    high[0, 0, 5, 9] = high[0, 0, 2, 2] = 0.8  # (5, 9) comes first in the aggregated reader's cell layout
    for maps in (high, AggregatedMaps(high, low)):
        peaks = find_peaks(maps, kernel=3, threshold=0.1, max_peaks=2, refine="none")
        assert peaks.index[0, 0].tolist() == [2 * 16 + 2, 5 * 16 + 9]


@pytest.mark.parametrize("aggregated", [False, True])
def test_peak_search_in_image_chunks_equals_whole_batch(monkeypatch, aggregated):
    """On CPU the search runs a few images at a time; every chunking must give the whole batch's peaks."""
    torch.manual_seed(3)
    high = F.avg_pool2d(torch.rand(5, 3, 24, 32), 5, 1, 2)
    maps = AggregatedMaps(high, F.avg_pool2d(high, 2)) if aggregated else high

    def search():
        return find_peaks(maps, kernel=3, threshold=high.quantile(0.9).item(), max_peaks=6)

    whole = search()
    image_bytes = 4 * 3 * 26 * 34  # float32, 3 channels, padded by 1 for kernel 3
    for images in (1, 2, 3):
        monkeypatch.setattr(peaks_module, "_CPU_BUFFER_BYTES", images * image_bytes)
        chunked = search()
        for field in ("x", "y", "index", "score", "valid"):
            assert torch.equal(getattr(chunked, field), getattr(whole, field)), (images, field)
    assert whole.valid.sum() > 20


def test_dense_and_sparse_paths_agree():
    torch.manual_seed(0)
    smooth = F.avg_pool2d(torch.rand(2, 3, 40, 40), 5, 1, 2)
    threshold = smooth.quantile(0.97).item()
    dense = find_peaks(smooth, kernel=3, threshold=0.0, max_peaks=400)  # most pixels above: dense path
    sparse = find_peaks(smooth, kernel=3, threshold=threshold, max_peaks=400)

    def found(peaks, above):
        keep = peaks.valid & (peaks.score > above)
        b, k, _ = torch.nonzero(keep, as_tuple=True)
        return set(zip(b.tolist(), k.tolist(), peaks.index[keep].tolist(), peaks.x[keep].tolist()))

    assert found(sparse, threshold) and found(sparse, threshold) == found(dense, threshold)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_sparse_peaks_are_the_pixels_equal_to_their_window_maximum(kernel):
    torch.manual_seed(1)
    maps = torch.rand(2, 3, 17, 23)  # distinct values, few above the threshold: the sparse path
    peaks = find_peaks(maps, kernel=kernel, threshold=0.95, max_peaks=400, refine="none")
    assert int(peaks.valid.sum()) == int(((maps == max_filter(maps, kernel)) & (maps > 0.95)).sum())


def test_max_filter_equals_max_pool():
    x = torch.rand(2, 3, 11, 13)
    for k in (1, 3, 5):
        torch.testing.assert_close(max_filter(x, k), F.max_pool2d(x, k, 1, k // 2))


def spikes(shape, fraction, seed):
    """Random values at a ``fraction`` of the pixels, zero elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) * (torch.rand(shape, generator=gen) < fraction)


def upsampled_average(high, low):
    """HigherHRNet's aggregation done the plain way: ``low`` upsampled 2x bilinearly, averaged with ``high``."""
    return 0.5 * (F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False) + high)


@pytest.fixture
def lazy_only(monkeypatch):
    """Fails the test if AggregatedMaps fall back to materialised maps: the test means to check the lazy path."""
    def refuse(self):
        raise AssertionError("AggregatedMaps fell back to materialised maps; make the test maps sparser")
    monkeypatch.setattr(AggregatedMaps, "materialise", refuse)


@pytest.mark.parametrize("dense", [False, True])
def test_aggregated_maps_equal_upsampled_average(dense, request):
    # Few pixels above 0.05 (the lazy path); every pixel above -1 (the fallback to materialised maps).
    low, high = spikes((2, 3, 32, 32), 0.002, 0), spikes((2, 3, 64, 64), 0.002, 1)
    threshold = -1.0 if dense else 0.05
    agg = AggregatedMaps(high, low)
    mean = upsampled_average(high, low)
    torch.testing.assert_close(agg.materialise(), mean)
    if not dense:
        request.getfixturevalue("lazy_only")
    plane, row, col = (t.reshape(-1) for t in torch.meshgrid(torch.arange(6), torch.arange(64), torch.arange(64),
                                                             indexing="ij"))
    torch.testing.assert_close(agg.values_at(plane, row, col).view(high.shape), mean)
    # The padded buffer lists exactly the pixels above the threshold and holds their values; the sparse buffer
    # leaves most others at -inf, never above the threshold.
    pad = 2
    exact = F.pad(mean, (pad,) * 4, value=float("-inf")).reshape(-1)
    with agg.padded(threshold, pad, 1) as (buffer, index):
        assert sorted(index.tolist()) == torch.nonzero(exact > threshold).flatten().tolist()
        torch.testing.assert_close(buffer[index], exact[index])
        assert bool((buffer <= torch.where(exact > threshold, exact, torch.full_like(exact, threshold)) + 1e-6).all())
        interior = F.pad(torch.ones_like(mean, dtype=torch.bool), (pad,) * 4).reshape(-1)
        assert bool(buffer[interior].isinf().any()) != dense


def test_aggregated_search_leaves_no_values_behind(lazy_only):
    # The lazy search writes into a per-thread scratch buffer and must put -inf back, also when the search fails,
    # or a later search would find an earlier image's peaks.
    first, second = (AggregatedMaps(spikes((1, 3, 64, 64), 0.002, s), spikes((1, 3, 32, 32), 0.002, s + 1))
                     for s in (10, 20))
    alone = find_peaks(first, 5, 0.05, 50)
    find_peaks(second, 5, 0.05, 50)
    again = find_peaks(first, 5, 0.05, 50)
    for name in ("x", "y", "index", "score", "valid"):
        torch.testing.assert_close(getattr(again, name), getattr(alone, name))
    with pytest.raises(RuntimeError, match="interrupted"):
        with second.padded(0.05, 2, 5) as (buffer, index):
            assert bool(torch.isfinite(buffer[index]).all()) and index.numel() > 0
            raise RuntimeError("interrupted")
    assert bool((buffer == float("-inf")).all())


@pytest.mark.parametrize("first_in_inference_mode", [True, False])
def test_aggregated_search_works_in_and_out_of_inference_mode(first_in_inference_mode, lazy_only, monkeypatch):
    # Evaluation decodes under torch.inference_mode, user code often outside it, one after the other in one thread:
    # the reused scratch buffer must serve both, whichever mode made it.
    monkeypatch.setattr(peaks_module, "_SCRATCH", peaks_module._NegInfScratch())
    maps = AggregatedMaps(spikes((1, 3, 64, 64), 0.002, 30), spikes((1, 3, 32, 32), 0.002, 31))
    reference = find_peaks(upsampled_average(maps.high, maps.low), 5, 0.05, 50)
    for inference in (first_in_inference_mode, not first_in_inference_mode, first_in_inference_mode):
        with torch.inference_mode(inference):
            peaks = find_peaks(maps, 5, 0.05, 50)
        torch.testing.assert_close(peaks.score, reference.score)
        torch.testing.assert_close(peaks.x, reference.x)


@pytest.mark.parametrize("kernel", [3, 5])
def test_aggregated_peaks_equal_peaks_of_the_materialised_maps(kernel, lazy_only):
    low, high = spikes((2, 3, 32, 32), 0.002, 2), spikes((2, 3, 64, 64), 0.002, 3)
    dense = find_peaks(upsampled_average(high, low), kernel, 0.05, 50)
    lazy = find_peaks(AggregatedMaps(high, low), kernel, 0.05, 50)
    assert int(lazy.valid.sum()) > 40
    for name in ("x", "y", "index", "score", "valid"):
        torch.testing.assert_close(getattr(lazy, name), getattr(dense, name))


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_aggregated_peaks_keep_the_tie_and_nan_rules(kernel, lazy_only):
    # Plateaus inside cells (constant 2 x 2 low blocks) and across them (a lone low spike upsamples to a 2 x 2
    # plateau over four cells): the latest pixel of a plateau in row-major order is its one peak. NaN pixels are
    # never peaks and never suppress a neighbour.
    low, high = torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 32, 32)
    low[0, 0, 4:6, 4:6] = 0.8
    low[0, 1, 9, 3] = 0.6
    low[1, 2, 12:14, 2:4] = 0.4
    high[1, 2, 25, 5] = float("nan")
    high[0, 1, 18:20, 6:8] = 0.3
    dense = find_peaks(upsampled_average(high, low), kernel, 0.05, 200)
    lazy = find_peaks(AggregatedMaps(high, low), kernel, 0.05, 200)
    assert int(lazy.valid.sum()) >= 3
    for name in ("x", "y", "index", "score", "valid"):
        torch.testing.assert_close(getattr(lazy, name), getattr(dense, name))


def test_sample_is_bilinear_with_pixel_centres_at_integers():
    maps = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)
    values = sample(maps, torch.tensor([[0.0, 1.5, 3.0]]), torch.tensor([[0.0, 0.5, 2.0]]))
    assert values[0, 0].tolist() == pytest.approx([0.0, 3.5, 11.0])


@pytest.mark.parametrize("size", [(9, 13), (1, 6), (5, 1)])
def test_sample_planes_reads_like_sample(size):
    """Points of different planes, inside, on the border and outside the map; non-finite values read finite."""
    h, w = size
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 2, h, w, generator=gen)
    plane = torch.tensor([0, 4, 4, 1, 5])
    x = torch.rand(5, 7, generator=gen) * (w + 3) - 2
    y = torch.rand(5, 7, generator=gen) * (h + 3) - 2
    x[0, :3], y[0, :3] = torch.tensor([0.0, w - 1.0, w - 1.0]), torch.tensor([0.0, h - 1.0, 0.0])
    expected = torch.stack([sample(maps[p][None], x[i][None], y[i][None])[0] for i, p in enumerate(plane.tolist())])
    torch.testing.assert_close(sample_planes(maps, plane, x, y), expected.permute(1, 0, 2), atol=1e-5, rtol=1e-5)
    maps[0, 0], maps[4, 1] = float("nan"), float("inf")
    x[1, 0] = float("nan")
    assert torch.isfinite(sample_planes(maps, plane, x, y)).all()


def test_match_max_known_answer_and_forbidden_pairs():
    scores = np.array([[0.9, 0.8], [0.85, 0.1]])
    rows, cols = match_max(scores)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    rows, cols = match_max(scores, allowed=np.array([[True, False], [False, False]]))
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0)]
    rows, cols = match_max(np.array([[0.3, 0.7, 0.5]]), allowed=np.array([[True, False, True]]))
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 2)]


def test_oks_is_one_for_identical_poses_and_falls_with_distance():
    pose = torch.tensor([[[10.0, 10.0, 1.0], [30.0, 40.0, 1.0]]])
    sigmas = torch.tensor([0.05, 0.05])
    assert oks_matrix(pose, pose, sigmas).item() == pytest.approx(1.0)
    shifted = pose.clone()
    shifted[..., 0] += torch.tensor([2.0, 2.0])
    far = pose.clone()
    far[..., 0] += 10.0
    o = oks_matrix(pose, torch.cat([shifted, far]), sigmas)[0]
    assert 0 < o[1] < o[0] < 1


def test_pose_nms_removes_duplicates_keeps_distinct():
    base = torch.tensor([[10.0, 10.0, 1.0], [30.0, 40.0, 1.0], [20, 60, 1.0]])
    poses = torch.stack([base, base + torch.tensor([0.5, 0.5, 0.0]), base + torch.tensor([100.0, 0, 0])])
    kept = pose_nms(poses, torch.tensor([0.9, 0.8, 0.7]), torch.full((3,), 0.05), threshold=0.5)
    assert kept.tolist() == [0, 2]
