"""Methods: every ``conf/method`` config on every ``conf/trunk`` config builds and matches its codec's outputs; the
heads train end to end; the losses vanish on ideal outputs; the AE loss behaves and matches a per-person loop; the
model_info app reports the published sizes."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from bottomup.config import build_method, build_model, build_trunk, group_options, load_group
from bottomup.decoders.base import PoseSelection
from bottomup.evaluation.tag_separation import tag_separation
from bottomup.methods import losses
from bottomup.methods.base import GroupingMethod
from bottomup.model_info import model_info
from bottomup.methods.spm import derive_hierarchy
from bottomup.skeletons import COCO, CROWDPOSE, Skeleton

METHODS = group_options("method")
TRUNKS = group_options("trunk")
PARTS = {
    "openpose": {"heatmap", "paf"},
    "ae": {"heatmap", "pull", "push"},
    "higherhrnet": {"heatmap", "pull", "push", "heatmap_highres"},
    "spm": {"root", "displacement", "heatmap"},
}
# Decoder arguments the codecs set themselves (from their own limbs / hierarchical options), so not in the yaml.
CODEC_SET_DECODER_ARGS = {"skeleton", "limbs", "parents"}
# Trunks small enough to train a step of on two CPU cores; the others are checked on the meta device.
CPU_PARAMETER_LIMIT = 5e6


def trunk_parameters(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_trunk(name).parameters())


SMALL_TRUNKS = [t for t in TRUNKS if trunk_parameters(t) < CPU_PARAMETER_LIMIT]


def scattered_people(count: int, size: int, seed: int) -> np.ndarray:
    """``[count, 17, 3]`` people in separate cells of a grid over a ``size`` canvas, about 20 % of joints
    unlabelled: no two people's joints share a heatmap peak, so ideal tags and targets are unambiguous."""
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(count)))
    cell = size / cols
    people = np.zeros((count, COCO.num_keypoints, 3), dtype=np.float32)
    for i in range(count):
        row, col = divmod(i, cols)
        people[i, :, 0] = (col + rng.uniform(0.25, 0.75, COCO.num_keypoints)) * cell
        people[i, :, 1] = (row + rng.uniform(0.25, 0.75, COCO.num_keypoints)) * cell
        people[i, :, 2] = np.where(rng.random(COCO.num_keypoints) < 0.8, 2.0, 0.0)
        people[i, 0, 2] = 2.0
    return people


def batch_targets(method: GroupingMethod, images: list[np.ndarray], size: int) -> dict[str, Tensor]:
    """The codec's targets of several images, stacked as the loader does."""
    encoded = [method.codec.encode(people, (size, size)) for people in images]
    return {name: torch.stack([e[name] for e in encoded]) for name in encoded[0]}


def signature_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """Keyword arguments of ``function`` and their defaults, less the ones the framework passes itself."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.kind is p.POSITIONAL_OR_KEYWORD and name not in {"self", "skeleton", "codec", "feature_info",
                                                                   "decoder"}}


def as_plain(value: Any) -> Any:
    """Tuples as lists, as they read back from yaml."""
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", METHODS)
def test_config_spells_out_every_option_with_its_default(name: str) -> None:
    cfg = load_group("method", name)
    assert cfg.name == name
    method = build_method(cfg, COCO)
    assert method.name == name
    decoder_class = type(method.codec.decoder)
    expected = {
        "codec": signature_defaults(method.codec_class.__init__),
        "decoder": {**signature_defaults(PoseSelection.__init__),
                    **{k: v for k, v in signature_defaults(decoder_class.__init__).items()
                       if k not in CODEC_SET_DECODER_ARGS}},
        "head": signature_defaults(method.head_class.__init__),
        "loss": signature_defaults(method.loss_class.__init__),
    }
    assert set(cfg.keys()) == {"_target_", "name", *expected}
    for section, defaults in expected.items():
        assert dict(cfg[section]) == {k: as_plain(v) for k, v in defaults.items()}, section


@pytest.mark.parametrize("trunk", TRUNKS)
@pytest.mark.parametrize("name", METHODS)
def test_outputs_match_the_codec_on_every_trunk(name: str, trunk: str) -> None:
    # Shapes only, so the meta device checks the full-size trunks without computing anything.
    with torch.device("meta"):
        model = build_model(trunk, name, COCO)
        predictions = model(torch.zeros(2, 3, 64, 64))
    stages = load_group("method", name).head.get("stages", 1)
    assert len(predictions) == model.trunk.num_stacks * stages
    for prediction in predictions:
        assert {k: tuple(v.shape) for k, v in prediction.items()} == {
            k: (2, spec.channels, 64 // spec.stride, 64 // spec.stride) for k, spec in model.codec.outputs.items()}


@pytest.mark.parametrize("name", METHODS)
def test_network_runs_channels_last_and_predict_hands_out_standard_layout(name: str) -> None:
    """Convolutions run channels-last (faster on CPU and CUDA); what decoders and map arithmetic get is contiguous
    and equals the channels-last forward's values."""
    torch.manual_seed(0)
    model = build_model("hrnet_w8_small", name, COCO).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        trained_on = model(images)[-1]
        predicted = model.predict(images)
    assert not all(v.is_contiguous() for v in trained_on.values())  # channels-last (or channel slices of it)
    for name_, maps in predicted.items():
        assert maps.is_contiguous()
        torch.testing.assert_close(maps, trained_on[name_], atol=0, rtol=0)


@pytest.mark.parametrize("trunk", SMALL_TRUNKS)
@pytest.mark.parametrize("name", METHODS)
def test_training_step_reaches_every_parameter(name: str, trunk: str) -> None:
    torch.manual_seed(0)
    model = build_model(trunk, name, COCO)
    targets = batch_targets(model.method, [scattered_people(3, 64, 0), scattered_people(1, 64, 1)], 64)
    total, parts = model.method.build_loss()(model(torch.randn(2, 3, 64, 64)), targets)
    assert set(parts) == PARTS[name]
    assert torch.isfinite(total) and total > 0
    assert total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-5)
    assert all(not p.requires_grad for p in parts.values())
    total.backward()
    stem = next(m for m in model.trunk.modules() if isinstance(m, nn.Conv2d))
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []


@pytest.mark.parametrize("name", METHODS)
def test_loss_vanishes_on_ideal_outputs(name: str) -> None:
    method = build_method(name, COCO)
    images = [scattered_people(4, 128, 2), scattered_people(2, 128, 3)]
    targets = batch_targets(method, images, 128)
    ideal = [method.codec.ideal_outputs(people, (128, 128)) for people in images]
    prediction = {k: torch.stack([o[k] for o in ideal]) for k in ideal[0]}
    if "tags" in prediction:
        # Ideal tags are person index + 1; any scale is as ideal, and spacing 10 makes exp(-d^2) vanish.
        prediction["tags"] = 10 * prediction["tags"]
    loss = method.build_loss()
    total, parts = loss([prediction, prediction], targets)
    assert set(parts) == PARTS[name]
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    noisy = {k: v + 0.1 * torch.randn_like(v) for k, v in prediction.items()}
    assert loss([noisy], targets)[0] > 1e-4


def test_stage_weights_scale_each_prediction_and_must_match_their_number() -> None:
    method = build_method("openpose", COCO)
    targets = batch_targets(method, [scattered_people(2, 64, 4)], 64)
    prediction = {k: torch.rand(1, spec.channels, 16, 16) for k, spec in method.codec.outputs.items()}
    single = method.build_loss()([prediction], targets)[0]
    weighted = method.loss_class(method.codec, stage_weights=[0.5, 2.0])
    assert weighted([prediction, prediction], targets)[0].item() == pytest.approx(2.5 * single.item())
    with pytest.raises(ValueError, match="stage_weights"):
        weighted([prediction], targets)


def test_masked_pixels_are_ignored() -> None:
    pred, target = torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8)
    weight = torch.rand(2, 2, 8, 8)
    mask = torch.ones(2, 1, 8, 8)
    mask[:, :, :4] = 0
    changed = pred.clone()
    changed[:, :, :4] += 5.0
    for term in (losses.masked_mse, losses.field_l2):
        assert term(changed, target, mask) == pytest.approx(term(pred, target, mask).item())
        assert term(changed, target) > term(pred, target)
    smooth = losses.weighted_smooth_l1
    assert smooth(changed, target, weight, mask) == pytest.approx(smooth(pred, target, weight, mask).item())


def random_joints(batch: int, people: int, joints: int, pixels: int, generator: torch.Generator) -> Tensor:
    """``[B, P, K, 2]`` AE joint indices with random labelled flags, so some people and images are empty."""
    index = torch.randint(0, pixels, (batch, people, joints), generator=generator)
    labelled = (torch.rand(batch, people, joints, generator=generator) < 0.5).long()
    labelled[:, torch.rand(people, generator=generator) < 0.3] = 0
    labelled[0] = 0
    return torch.stack([index * labelled, labelled], dim=-1)


def pull_push_loop(tags: Tensor, joints: Tensor, push: str) -> tuple[Tensor, Tensor]:
    """Reference AE loss: one person and one pair at a time, as HigherHRNet's ``singleTagLoss`` (push not halved)."""
    pulls, pushes = [], []
    for image_tags, image_joints in zip(tags, joints):
        flat = image_tags.flatten(2)  # [K, D, H * W]
        means, pull = [], tags.new_zeros(())
        for person in image_joints:
            person_tags = [flat[k, :, i] for k, (i, flag) in enumerate(person.tolist()) if flag > 0]
            if not person_tags:
                continue
            stacked = torch.stack(person_tags)
            means.append(stacked.mean(dim=0))
            pull = pull + (stacked - means[-1]).square().sum(dim=1).mean()
        n = len(means)
        push_sum = tags.new_zeros(())
        for i in range(n):
            for j in range(n):
                if i != j:
                    distance = (means[i] - means[j]).square().sum()
                    push_sum = push_sum + (torch.exp(-distance) if push == "exp"
                                           else (1 - distance.sqrt()).clamp_min(0))
        pulls.append(pull / max(n, 1))
        pushes.append(push_sum / max(n * (n - 1), 1))
    return torch.stack(pulls).mean(), torch.stack(pushes).mean()


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("push", ["exp", "max"])
def test_vectorised_pull_push_matches_a_per_person_loop(push: str, dim: int) -> None:
    generator = torch.Generator().manual_seed(dim)
    tags = (torch.randn(4, 5, dim, 6, 7, generator=generator) * 0.7).requires_grad_()
    joints = random_joints(4, 6, 5, 6 * 7, generator)
    fast = losses.ae_pull_push(tags, joints, push)
    fast_grad = torch.autograd.grad(sum(fast), tags)[0]
    slow = pull_push_loop(tags, joints, push)
    slow_grad = torch.autograd.grad(sum(slow), tags)[0]
    assert slow[1] > 0
    torch.testing.assert_close(torch.stack(fast), torch.stack(slow))
    torch.testing.assert_close(fast_grad, slow_grad)


def person_tags(spacing: float, dim: int) -> tuple[Tensor, Tensor]:
    """Three people with 4 joints each on a 1 x 12 map, person ``p``'s tags all ``p * spacing`` (first component)."""
    tags = torch.zeros(1, 4, dim, 1, 12)
    joints = torch.zeros(1, 5, 4, 2, dtype=torch.long)
    for p in range(3):
        tags[0, :, 0, 0, 4 * p: 4 * p + 4] = p * spacing
        joints[0, p, :, 0] = torch.arange(4) + 4 * p
        joints[0, p, :, 1] = 1
    return tags, joints


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("push", ["exp", "max"])
def test_pull_is_zero_for_agreeing_tags_and_push_falls_as_people_separate(push: str, dim: int) -> None:
    values = []
    for spacing in (0.0, 0.2, 0.4, 0.6, 0.8, 1.5):
        pull, push_loss = losses.ae_pull_push(*person_tags(spacing, dim), push)
        assert pull.item() == 0.0
        values.append(push_loss.item())
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values[:5], values[1:5]))
    assert values[5] < values[4]


def test_tag_separation_finds_the_joint_whose_tag_sits_with_another_person() -> None:
    k, size = 3, 8
    tags = torch.zeros(2, k, 1, size, size)
    joints = torch.zeros(2, 4, k, 2, dtype=torch.long)
    # Image 0: person 0 along row 1 with tags 1, 1, 2.9; person 1 along row 5 with tags 3; image 1 has one person.
    for person, (row, values) in enumerate([(1, (1.0, 1.0, 2.9)), (5, (3.0, 3.0, 3.0))]):
        for joint, value in enumerate(values):
            col = 1 + 2 * joint if person == 0 else 3 + 2 * joint
            tags[0, joint, 0, row, col] = value
            joints[0, person, joint] = torch.tensor([row * size + col, 1])
    joints[1, 0, :, 1] = 1
    result = tag_separation(tags, joints)
    assert len(result.own) == 6
    mean0 = (1.0 + 1.0 + 2.9) / 3
    np.testing.assert_allclose(result.own, [mean0 - 1, mean0 - 1, 2.9 - mean0, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(result.other, [2, 2, 0.1, 3 - mean0, 3 - mean0, 3 - mean0], atol=1e-5)
    assert result.confused.tolist() == [False, False, True, False, False, False]
    # Centres (3, 1) and (5, 5), sizes 4 and 4 (columns 1..5 and 3..7).
    np.testing.assert_allclose(result.centre_gap, np.hypot(2, 4) / 4, atol=1e-5)
    np.testing.assert_allclose(result.neighbour_gap, np.hypot(2, 4) / 4, atol=1e-5)
    with pytest.raises(ValueError, match="joints"):
        tag_separation(tags, joints[0])


def test_ae_head_and_loss_with_two_dimensional_tags() -> None:
    cfg = load_group("method", "ae")
    cfg.codec.tag_dim = 2
    model = build_model("hrnet_w8_small", cfg, COCO)
    prediction = model(torch.randn(1, 3, 64, 64))
    assert prediction[-1]["tags"].shape == (1, 2 * COCO.num_keypoints, 16, 16)
    total, _ = model.method.build_loss()(prediction, batch_targets(model.method, [scattered_people(3, 64, 5)], 64))
    total.backward()
    assert model.heads[0].final.predict.weight.grad.abs().sum() > 0


def mirrors(parents: tuple[int, ...], flip: tuple[int, ...]) -> bool:
    return all(parents[flip[j]] == (flip[p] if p >= 0 else -1) for j, p in enumerate(parents))


def test_spm_hierarchy_is_a_mirror_tree_from_the_torso_out() -> None:
    coco = derive_hierarchy(COCO)
    name = COCO.keypoints
    assert [name[j] for j in range(17) if coco[j] == -1] == ["nose", "left_shoulder", "right_shoulder"]
    assert name[coco[name.index("left_wrist")]] == "left_elbow"
    assert name[coco[name.index("right_ankle")]] == "right_knee"
    for skeleton in (COCO, CROWDPOSE):
        assert mirrors(derive_hierarchy(skeleton), skeleton.flip_index)
    # Crossed limbs let a breadth-first search reach right_b from left_a before right_a gets to it.
    crossed = Skeleton(name="crossed", keypoints=("nose", "left_a", "right_a", "left_b", "right_b"),
                       limbs=((0, 1), (0, 2), (1, 3), (2, 4), (1, 4), (2, 3)), flip_pairs=((1, 2), (3, 4)))
    assert derive_hierarchy(crossed) == (-1, -1, -1, 1, 2)


def test_flip_channels_leaves_limb_fields_to_their_codec() -> None:
    codec = build_method("openpose", COCO).codec
    with pytest.raises(ValueError, match="field"):
        codec.flip_channels(torch.zeros(1, 66, 4, 4), "field")


def test_higherhrnet_deconvolution_module_is_the_published_one() -> None:
    with torch.device("meta"):
        model = build_model("hrnet_w32", "higherhrnet", COCO)
    head = model.heads[0]
    k = COCO.num_keypoints
    deconv = head.deconv[0]
    assert isinstance(deconv, nn.ConvTranspose2d)
    assert (deconv.in_channels, deconv.out_channels) == (32 + 2 * k, 32)
    assert (deconv.kernel_size, deconv.stride, deconv.padding, deconv.bias) == ((4, 4), (2, 2), (1, 1), None)
    assert [type(m).__name__ for m in head.deconv] == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] + ["BasicBlock"] * 4
    assert (head.final.predict.out_channels, head.final_highres.out_channels) == (2 * k, k)


def test_openpose_refinement_stages_see_features_and_previous_maps() -> None:
    cfg = load_group("method", "openpose")
    cfg.head.stages = 3
    model = build_model("hrnet_w8_small", cfg, COCO)
    assert len(model(torch.randn(1, 3, 64, 64))) == 3
    head = model.heads[0]
    first = head.stages[0]["pafs"].tower[0][0]
    later = head.stages[2]["heatmaps"].tower[0][0]
    assert later.in_channels == first.in_channels + head.prediction_channels == 8 + 17 + 66


def test_head_rejects_a_codec_at_another_stride() -> None:
    cfg = load_group("method", "spm")
    cfg.codec.stride = 8
    with pytest.raises(ValueError, match="stride"):
        build_model("hrnet_w8_small", cfg, COCO)


@pytest.mark.parametrize(("name", "params", "gflops"), [("higherhrnet", 28.6, 47.9), ("ae", 28.5, 38.9)])
def test_w32_at_512_matches_the_published_size(name: str, params: float, gflops: float) -> None:
    info = model_info("hrnet_w32", name, "coco", 512)
    assert info["params_M"] == pytest.approx(params, rel=0.02)
    assert info["gflops"] == pytest.approx(gflops, rel=0.05)


def test_model_info_app_prints_json_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bottomup.model_info", "trunk=hrnet_w8_small", "method=higherhrnet", "input_size=64"],
        cwd=tmp_path, capture_output=True, text=True, check=True)
    info = json.loads(result.stdout)
    assert set(info) == {"params_M", "gflops", "outputs"}
    assert info["params_M"] > 0 and info["gflops"] > 0
    assert info["outputs"] == {"heatmaps": [1, 17, 16, 16], "tags": [1, 17, 16, 16],
                               "heatmaps_highres": [1, 17, 32, 32]}
    assert list(tmp_path.iterdir()) == []
