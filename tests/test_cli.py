"""Every command-line app turns bad input into one paragraph naming the file and the field or id at fault, exit
status 2 and no traceback (``debug=true`` shows it), and handles what can be handled.

Each app runs in a subprocess (a few seconds of imports), so the many broken annotation files go through the oracle
app, which reads nothing else, and every other app gets one or two cases; the library-level checks of the same files
are in ``test_data.py``, whose file builders these tests reuse.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

from bottomup.cli import friendly_errors, remove_partial_writes, write_atomic
from bottomup.config import build_method, compose
from bottomup.errors import ConfigError, DataError
from bottomup.evaluate import evaluate_checkpoint
from bottomup.evaluation import inference
from bottomup.evaluation.coco_eval import closeness_per_image, evaluate_by_closeness, load_annotations
from bottomup.evaluation.oracle import run_oracle
from bottomup.skeletons import COCO
from test_data import _bad, category, person, write_dataset
from test_training import run_app, tiny, tiny_checkpoint  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent


def assert_friendly(result: subprocess.CompletedProcess, *mentions: str) -> None:
    """The app ended with exit status 2 and a one-paragraph error holding every one of ``mentions``."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr[result.stderr.index("error: "):]
    for mention in mentions:
        assert mention in message, (mention, message)


# --------------------------------------------------------------------------------------------------------------------
# Annotation files (oracle app)


@pytest.mark.parametrize("case", ["missing file", "invalid json", "not coco", "wrong keypoint length",
                                  "nan keypoints", "unknown image id", "duplicate image id"])
def test_bad_annotation_file_is_named_by_the_oracle_app(tmp_path: Path, case: str) -> None:
    path, mention = _bad(tmp_path, case)
    result = run_app("bottomup.oracle", f"annotations={path}", "methods=[ae]", f"hydra.run.dir={tmp_path / 'out'}",
                     cwd=tmp_path)
    field = ("annotation id 7", "'keypoints'") if case in ("wrong keypoint length", "nan keypoints") else ()
    assert_friendly(result, str(path), mention, *field)


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    path, _ = _bad(tmp_path, "invalid json")
    result = run_app("bottomup.oracle", f"annotations={path}", "debug=true", f"hydra.run.dir={tmp_path / 'out'}",
                     cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "DataError" in result.stderr and str(path) in result.stderr


def test_oracle_app_repairs_fixable_oddities(tmp_path: Path) -> None:
    # Image 1 (64x48): a joint 2 px right of the image (clipped in), one 40 px out (dropped, with a warning naming
    # the file and the annotation), no 'area', 'num_keypoints' or 'iscrowd'; image 2 holds nobody.
    clipped = person(1, 1, {0: (10.0, 10.0), 5: (20.0, 20.0), 11: (65.0, 30.0), 12: (30.0, 30.0)})
    dropped = person(2, 1, {0: (40.0, 10.0), 5: (104.0, 20.0), 11: (44.0, 30.0), 12: (50.0, 30.0)})
    for ann in (clipped, dropped):
        del ann["area"], ann["num_keypoints"], ann["iscrowd"]
    images = [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}]
    path = write_dataset(tmp_path, [clipped, dropped], images=images, write_images=False)
    out = tmp_path / "oracle.json"
    result = run_app("bottomup.oracle", f"annotations={path}", "methods=[ae]", "input_size=64", f"output={out}",
                     f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stderr and "annotation ids [2]" in result.stderr
    assert json.loads(out.read_text())["results"]["ae"]["AP"] > 0.5


def test_results_are_scored_in_the_files_own_keypoint_category(tmp_path: Path) -> None:
    """COCO-format files number their categories freely; results of category 1 would match nobody in category 7."""
    joints = {0: (20.0, 12.0), 5: (14.0, 20.0), 6: (26.0, 20.0), 11: (16.0, 34.0), 12: (24.0, 34.0)}
    path = write_dataset(tmp_path, [person(1, 1, joints, category_id=7)], write_images=False,
                         categories=[dict(category(), id=7)])
    report = run_oracle(load_annotations(path), {"ae": build_method("ae", COCO).codec}, input_size=64)
    assert report["results"]["ae"]["AP"] > 0.9


def test_ap_by_closeness_splits_images_of_overlapping_and_of_separate_people(tmp_path: Path) -> None:
    """Image 1 holds one person, a crowd region and a person without labelled joints (in neither bucket), image 2 two
    people 60 px apart, image 3 two people 2 px apart, each 20 px tall: apart and close. Perfect results score 1 in
    both buckets; without image 3's, close scores 0."""
    def body(ann_id: int, image_id: int, x: float) -> dict:
        return person(ann_id, image_id, {0: (x, 12.0), 5: (x - 6, 20.0), 6: (x + 6, 20.0), 11: (x - 4, 32.0),
                                         12: (x + 4, 32.0)})

    people = [body(1, 1, 30.0), body(2, 2, 20.0), body(3, 2, 80.0), body(4, 3, 30.0), body(5, 3, 32.0)]
    crowd = person(6, 1, {}, iscrowd=1, num_keypoints=0, segmentation=[[0, 0, 20, 0, 20, 20, 0, 20]])
    unlabelled = person(7, 1, {}, num_keypoints=0)
    anns = [*people, crowd, unlabelled]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 48} for i in (1, 2, 3)]
    annotations = load_annotations(write_dataset(tmp_path, anns, images, write_images=False))
    coco, sigmas = annotations.coco, annotations.skeleton.sigmas
    assert closeness_per_image(coco, [1, 2, 3]) == {1: None, 2: "apart", 3: "close"}
    truth = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0} for a in people]
    assert evaluate_by_closeness(coco, truth, sigmas, [1, 2, 3]) == {"apart": {"AP": 1.0, "images": 1},
                                                                      "close": {"AP": 1.0, "images": 1}}
    without_close = [r for r in truth if r["image_id"] != 3]
    assert evaluate_by_closeness(coco, without_close, sigmas, [1, 2, 3])["close"]["AP"] == 0.0
    assert evaluate_by_closeness(coco, truth, sigmas, [1]) == {}


# --------------------------------------------------------------------------------------------------------------------
# Training, evaluation, prediction and model_info apps


def test_unknown_config_choice_lists_the_choices(tmp_path: Path) -> None:
    # Hydra's own error (its exit status, 1) lists the group's options.
    result = run_app("bottomup.train", "method=nope", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not find 'method/nope'" in result.stderr
    assert all(f"\t{name}\n" in result.stderr for name in ("ae", "higherhrnet", "openpose", "spm"))


def test_train_app_names_the_broken_annotation_file(tmp_path: Path) -> None:
    path, mention = _bad(tmp_path, "duplicate annotation id")
    (tmp_path / "annotations").mkdir()
    path = path.rename(tmp_path / "annotations" / "person_keypoints_train2017.json")
    run_dir = tmp_path / "run"
    result = run_app("bottomup.train", "data=coco", f"data.root={tmp_path}", f"hydra.run.dir={run_dir}",
                     cwd=tmp_path)
    assert_friendly(result, str(path), mention)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and mention in status["error"]


def test_model_info_names_trunk_and_method_that_do_not_fit(tmp_path: Path) -> None:
    result = run_app("bottomup.model_info", "trunk=hrnet_w32", "method=higherhrnet", "method.codec.stride=3",
                     cwd=tmp_path)
    assert_friendly(result, "trunk 'hrnet_w32' with method 'higherhrnet'", "even stride", "got 3")


def test_evaluation_with_zero_detections_scores_zero(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = run_app("bottomup.evaluate", f"checkpoint={tiny_checkpoint}", "device=cpu", f"output_dir={out}",
                     f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "results.json").read_text()) == []
    assert metrics["images"] == 8 and metrics["AP"] == 0.0 and metrics["AR"] == 0.0


def test_evaluation_changes_decoder_options_of_the_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # The checkpoint's decoder keeps no peak; evaluating with a threshold of 0 finds people in the untrained maps.
    cfg = compose("evaluate", [f"checkpoint={tiny_checkpoint}", "+decoder.detection_threshold=0.0", "device=cpu",
                               f"output_dir={tmp_path}"])
    metrics = evaluate_checkpoint(cfg)
    assert metrics["config"]["decoder"] == {"detection_threshold": 0.0}
    assert json.loads((tmp_path / "results.json").read_text())
    cfg = compose("evaluate", [f"checkpoint={tiny_checkpoint}", "+decoder.no_such_option=1", "device=cpu",
                               f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="no_such_option"):
        evaluate_checkpoint(cfg)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_decode_time_by_crowd_size_only_from_one_image_per_call(tiny_checkpoint: Path, tmp_path: Path,
                                                                batch_size: int) -> None:
    """A batch's decode time shared out over images of every crowd size would say nothing about any of them."""
    cfg = compose("evaluate", [f"checkpoint={tiny_checkpoint}", f"batch_size={batch_size}", "device=cpu",
                               f"output_dir={tmp_path}"])
    by_people = evaluate_checkpoint(cfg)["by_people"]
    assert by_people and all(("decode_ms" in entry) == (batch_size == 1) for entry in by_people.values())


def test_flip_test_of_a_model_never_trained_on_mirrored_images_warns(tiny_checkpoint: Path, tmp_path: Path,
                                                                      recwarn: pytest.WarningsRecorder) -> None:
    # The tiny checkpoint trained on the synthetic default, whose config never mirrors an image.
    for flip in (True, False):
        cfg = compose("evaluate", [f"checkpoint={tiny_checkpoint}", f"flip={flip}", "max_images=2", "device=cpu",
                                   f"output_dir={tmp_path}"])
        evaluate_checkpoint(cfg)
        flip_warnings = [w for w in recwarn.list if "augment.flip=0" in str(w.message)]
        assert len(flip_warnings) == 1 and "'synthetic'" in str(flip_warnings[0].message)
    recwarn.clear()
    for data in ({"name": "coco", "augment": {"flip": 0.5}}, {"name": "custom"}):
        inference.warn_if_flip_untrained(inference.InferenceOptions(flip=True), data)
    assert not recwarn.list


def test_tag_separation_script_reports_on_a_checkpoint(tiny_checkpoint: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "tag_separation.py"), str(tiny_checkpoint),
                             "--max-images", "6", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "6 val images" in result.stdout
    assert re.search(r"nearer another person's mean tag than their own: \d+\.\d %", result.stdout)


def test_evaluating_on_other_keypoints_names_data_and_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # A CrowdPose-layout file (14 keypoints) against a COCO-17 checkpoint.
    (tmp_path / "json").mkdir()
    (tmp_path / "images").mkdir()
    names = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
             "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"]
    (tmp_path / "json" / "crowdpose_test.json").write_text(json.dumps({
        "images": [], "annotations": [], "categories": [{"id": 1, "name": "person", "keypoints": names}]}))
    cfg = compose("evaluate", [f"checkpoint={tiny_checkpoint}", "data=crowdpose", f"data.root={tmp_path}",
                               "device=cpu", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError) as info:
        evaluate_checkpoint(cfg)
    message = str(info.value)
    assert "'crowdpose'" in message and "crowdpose_test.json" in message and str(tiny_checkpoint) in message


def test_predict_app_reads_grayscale_rgba_and_empty_images_and_names_a_corrupt_one(tiny_checkpoint: Path,
                                                                                   tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "a_gray.png"), rng.integers(0, 256, (40, 60), dtype=np.uint8))
    cv2.imwrite(str(images / "b_rgba.png"), rng.integers(0, 256, (50, 30, 4), dtype=np.uint8))
    cv2.imwrite(str(images / "c_blank.jpg"), np.full((32, 32, 3), 128, np.uint8))
    (images / "d_corrupt.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    out = tmp_path / "out"
    # No input_size: the checkpoint's own (64) is used.
    result = run_app("bottomup.predict", f"checkpoint={tiny_checkpoint}", f"images={images}", "device=cpu",
                     f"output_dir={out}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert "network input of 64 px" in result.stdout
    # The images before the corrupt one were read (as RGB), decoded (nobody: the checkpoint keeps no peak) and drawn.
    for name in ("a_gray.png", "b_rgba.png", "c_blank.jpg"):
        assert f"{name}: 0 people" in result.stdout
        assert (out / f"{Path(name).stem}.png").is_file()
    assert_friendly(result, str(images / "d_corrupt.jpg"), "corrupt")


# --------------------------------------------------------------------------------------------------------------------
# Shared pieces, in process


def test_missing_required_setting_is_a_friendly_error(capsys: pytest.CaptureFixture[str]) -> None:
    @friendly_errors
    def main(cfg: object) -> None:
        compose("evaluate").checkpoint

    with pytest.raises(SystemExit) as info:
        main(None)
    assert info.value.code == 2
    assert "checkpoint is required: set it on the command line" in capsys.readouterr().err


class CorruptImages(Dataset):
    """A dataset whose one image is corrupt, as :class:`~bottomup.data.CocoKeypoints` reports it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> None:
        raise DataError("image /data/train/000001.jpg is corrupt or not an image file")


def test_error_in_a_loader_worker_prints_only_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    @friendly_errors
    def main(cfg: object) -> None:
        next(iter(DataLoader(CorruptImages(), num_workers=1)))

    with pytest.raises(SystemExit):
        main(None)
    err = capsys.readouterr().err
    assert err.startswith("error: image /data/train/000001.jpg is corrupt or not an image file\n")
    assert "Traceback" not in err


@pytest.mark.parametrize("value, debug", [("1", True), ("0", False), ("", False)])
def test_bottomup_debug_environment_variable(monkeypatch: pytest.MonkeyPatch, value: str, debug: bool) -> None:
    monkeypatch.setenv("BOTTOMUP_DEBUG", value)

    @friendly_errors
    def main(cfg: object) -> None:
        raise DataError("annotation file x.json: duplicate image id 1")

    with pytest.raises(DataError if debug else SystemExit):
        main(None)


def test_atomic_writes_leave_ordinary_permissions_and_no_temporary_file(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    leftover = tmp_path / ".metrics.json.0123456789ab.tmp"
    leftover.write_text("{")
    assert remove_partial_writes(path) == [leftover]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
