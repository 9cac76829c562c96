"""bottomup.compare end to end at a tiny size, its resume, its per-run configs, and the conf/experiment presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bottomup.compare import changed_settings, run_config
from bottomup.config import CONF_DIR, compose, group_options, run_name
from bottomup.errors import ConfigError
from bottomup.evaluation.report import COSTS, GRID_CELLS, METRICS, PLOTS
from bottomup.report import main as report_main

METHODS = ("openpose", "ae", "higherhrnet", "spm")
TINY = ["trunk=hrnet_w8_small", "epochs=1", "batch_size=8", "workers=0", "threads=1",
        "data.synthetic.num_train=16", "data.synthetic.num_val=8", "data.input_size=64", "oracle.max_images=8",
        "oracle.levels.noise=[0.1]", "oracle.levels.jitter=[0.5]", "oracle.levels.dropout=[0.2]"]


def run_compare(root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bottomup.compare", *TINY, *overrides, f"hydra.run.dir={root / 'compare'}"]
    return subprocess.run(command, cwd=root, env={**os.environ, "BOTTOMUP_CACHE": str(root / "cache")},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("compare")
    done = run_compare(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done


def test_compare_writes_the_comparison(compared: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, done = compared
    out = root / "compare"
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison["methods"]) == list(METHODS)
    for method, entry in comparison["methods"].items():
        assert entry["status"] == "done" and entry["run_dir"] == f"runs/{method}"
        assert set(METRICS) | set(COSTS) | {"by_people"} <= set(entry)
        assert entry["by_people"] and all({"AP", "images", "decode_ms"} <= set(b) for b in entry["by_people"].values())
        assert entry["params_M"] > 0 and entry["forward_ms_per_image"] > 0
        cells = comparison["oracle_grid"][method]
        for detection, grouping in GRID_CELLS:
            assert set(METRICS) <= set(cells[detection][grouping])
    kinds = comparison["oracle_study"]["kinds"]
    assert {k: v["levels"] for k, v in kinds.items()} == {"noise": [0, 0.1], "jitter": [0, 0.5], "dropout": [0, 0.2]}
    # Ideal maps decode to most of the people (the pure oracle cell is the study's level 0 on the same images).
    assert all(aps[0] > 0.3 for kind in kinds.values() for aps in kind["AP"].values())
    assert {p.name for p in out.glob("*.png")} == set(PLOTS)
    markdown = (out / "comparison.md").read_text()
    for heading in ("## Accuracy and cost", "## AP by people per image", "## Oracle grid", "## Oracle grouping study"):
        assert heading in markdown
    assert "Runs not reported" not in markdown
    assert "| openpose | done |" in done.stdout and "det ideal, grp ideal" in done.stdout


def test_rerun_reuses_the_trained_runs(compared: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = compared
    runs = root / "compare" / "runs"
    stamps = {p: p.stat().st_mtime_ns for m in METHODS for p in (runs / m / "checkpoint.pt", runs / m / "metrics.jsonl",
                                                                 runs / m / "oracle_cells.json")}
    again = run_compare(root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(f"{m}: finished run reused" in again.stdout for m in METHODS)
    assert "[train]" not in again.stdout and "oracle study" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_rerun_with_other_training_settings_is_refused(compared: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = compared
    refused = run_compare(root, "optim.lr=0.01")
    assert refused.returncode == 2
    assert "trained with other settings (optim.lr: 0.005 -> 0.01)" in refused.stderr


def test_rerun_with_other_decoder_options_evaluates_again_without_training(
        compared: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = compared
    runs = root / "compare" / "runs"
    weights = {m: (runs / m / "checkpoint.pt").stat().st_mtime_ns for m in METHODS}
    again = run_compare(root, "+method_overrides.spm.decoder.snap=null")
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(f"{m}: finished run reused" in again.stdout for m in METHODS if m != "spm")
    assert "[train] spm" in again.stdout and "resuming at epoch 1" in again.stdout
    assert {m: (runs / m / "checkpoint.pt").stat().st_mtime_ns for m in METHODS} == weights
    assert json.loads((runs / "spm" / "oracle_cells.json").read_text())["key"]["decoder"]["snap"] is None


def test_report_on_a_compare_folder(compared: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    root, _ = compared
    assert report_main([str(root / "compare"), "--out", str(tmp_path)]) == 0
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert list(comparison["methods"]) == list(METHODS) and set(comparison["oracle_grid"]) == set(METHODS)
    assert {p.name for p in tmp_path.glob("*.png")} == set(PLOTS)


def folder_name(app: str, overrides: list[str]) -> str:
    """The run folder name ``app``'s config gives a command line with ``overrides``."""
    hydra = OmegaConf.load(CONF_DIR / f"{app}.yaml").hydra
    folder = OmegaConf.to_container(hydra.run, resolve=False)["dir"]
    assert folder.endswith("/${run_name:${hydra:overrides.task},${hydra:job.config.override_dirname.exclude_keys}}")
    return run_name(overrides, list(hydra.job.config.override_dirname.exclude_keys))


def test_run_folders_are_named_by_what_changes_learning() -> None:
    # Decoder options, paths and evaluation settings change how a run is read, not what it learns: same folder.
    assert folder_name("train", ["method=spm", "optim.lr=1e-3", "method.decoder.snap=null", "+method.decoder.x=1",
                                 "data.root=/data/coco", "eval.flip=true", "epochs=40"]) == "optim.lr=1e-3"
    assert folder_name("train", ["method.head.stages=1", "data.input_size=256"]) == \
        "data.input_size=256,method.head.stages=1"
    assert folder_name("compare", ["+method_overrides.spm.decoder.snap=null", "data.root=/data/coco",
                                   "+method_overrides.openpose.head.stages=1", "oracle.levels.noise=[0.1]"]) == \
        "+method_overrides.openpose.head.stages=1"
    # A slash in a kept value must not nest folders.
    assert run_name(["trunk.pretrained=/w/hrnet.pth"], []) == "trunk.pretrained=_w_hrnet.pth"


def test_run_config_takes_compare_settings_and_keeps_the_method() -> None:
    cfg = compose("compare", ["trunk=hrnet_w16_small", "epochs=3", "optim.lr=0.002", "eval.flip=true",
                              "+method_overrides.spm.head.channels=32"])
    runs = {m: run_config(cfg, m) for m in METHODS}
    for method, run in runs.items():
        assert run.method.name == method
        assert run.trunk.name == "hrnet_w16_small" and run.data.name == "synthetic"
        assert (run.epochs, run.optim.lr, run.eval.flip, run.eval_every) == (3, 0.002, True, 0)
        assert "methods" not in run and "oracle" not in run
    assert runs["spm"].method.head.channels == 32 and runs["openpose"].method.head.channels == 64
    with pytest.raises(ConfigError, match="unknown method"):
        run_config(cfg, "pifpaf")


def test_changed_settings_ignores_how_a_run_is_carried_out() -> None:
    old = {"epochs": 1, "workers": 2, "eval": {"flip": False}, "data": {"root": "/a", "input_size": 64}}
    new = {"epochs": 2, "workers": 0, "eval": {"flip": True}, "data": {"root": "/b", "input_size": 128}}
    assert changed_settings(old, new) == ["data.input_size", "epochs"]


@pytest.mark.parametrize("name, trunk, method, lr, epochs, milestones, batch_size", [
    ("higherhrnet_w32_512", "hrnet_w32", "higherhrnet", 1.5e-3, 300, [200, 260], 24),
    ("ae_hrnet_w32_512", "hrnet_w32", "ae", 1.5e-3, 300, [200, 260], 24),
    ("openpose_hrnet_w32", "hrnet_w32", "openpose", 1.5e-3, 300, [200, 260], 24),
    ("spm_hrnet_w32", "hrnet_w32", "spm", 1e-3, 140, [90, 120], 10),
])
def test_experiment_presets_apply(name: str, trunk: str, method: str, lr: float, epochs: int, milestones: list[int],
                                  batch_size: int) -> None:
    assert name in group_options("experiment")
    cfg = compose("train", [f"+experiment={name}", "data=coco", "data.root=/data/coco"])
    assert (cfg.trunk.name, cfg.method.name, cfg.data.name, cfg.data.root) == (trunk, method, "coco", "/data/coco")
    assert (cfg.optim.name, cfg.optim.lr, cfg.epochs, list(cfg.optim.milestones)) == ("adam", lr, epochs, milestones)
    assert (cfg.batch_size, cfg.optim.warmup_steps, cfg.data.input_size, cfg.eval.flip) == (batch_size, 500, 512, True)


SHORT_CPU = "trunk=hrnet_w16_small optim.lr=5e-3 optim.warmup_steps=100 optim.schedule=cosine".split()


@pytest.mark.parametrize("name, overrides", [
    ("cpu10_openpose", ["method=openpose", "epochs=31", "eval_every=31", "method.head.stages=1"]),
    ("cpu10_ae", ["method=ae", "epochs=34", "eval_every=34", "method.loss.pull_weight=0.03",
                  "method.loss.push_weight=0.015"]),
    ("cpu10_higherhrnet", ["method=higherhrnet", "epochs=28", "eval_every=28", "method.loss.pull_weight=0.1",
                           "method.loss.push_weight=0.05"]),
    ("cpu10_spm", ["method=spm", "epochs=27", "eval_every=27", "method.loss.heatmap_weight=10"]),
])
def test_ten_minute_presets_are_the_readme_commands(name: str, overrides: list[str]) -> None:
    preset = OmegaConf.to_container(compose("train", [f"+experiment={name}"]))
    spelled_out = OmegaConf.to_container(compose("train", SHORT_CPU + overrides))
    assert preset == spelled_out
    assert preset["data"]["name"] == "synthetic" and preset["method"]["name"] == name.removeprefix("cpu10_")
