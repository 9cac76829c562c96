"""bottomup.report on a real tiny training sweep: finished, failed, missing and still-running runs are told apart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bottomup.evaluation.report import COSTS, METRICS, PLOTS, to_markdown
from bottomup.report import collect, job_labels, main
from test_training import run_app

# One image per evaluation call, so the runs time their decoding per image (and by crowd size).
TINY = ["epochs=1", "workers=0", "threads=1", "log_every=1", "data.synthetic.num_train=16", "data.synthetic.num_val=8",
        "data.input_size=64", "eval.batch_size=1"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-job sweep: ae and spm at batch size 4 train; at batch size 1000 (more than the 16 training
    images) each run raises, which the sweep records as failed and goes on."""
    root = tmp_path_factory.mktemp("report")
    command = [sys.executable, "-m", "bottomup.train", "-m", "method=ae,spm", "batch_size=4,1000", *TINY,
               f"hydra.sweep.dir={root / 'sweep'}"]
    done = subprocess.run(command, cwd=root, env={**os.environ, "BOTTOMUP_CACHE": str(root / "cache")},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "sweep"


def copy_of(sweep: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    return copy


def test_report_on_a_finished_sweep(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    methods = comparison["methods"]
    assert list(methods) == ["ae batch_size=4", "ae batch_size=1000", "spm batch_size=4", "spm batch_size=1000"]
    for label in ("ae batch_size=4", "spm batch_size=4"):
        assert methods[label]["status"] == "done"
        assert set(METRICS) | set(COSTS) | {"by_people"} <= set(methods[label])
        assert all({"AP", "images", "decode_ms"} <= set(b) for b in methods[label]["by_people"].values())
        assert methods[label]["by_closeness"] and set(methods[label]["by_closeness"]) <= {"apart", "close"}
    for label in ("ae batch_size=1000", "spm batch_size=1000"):
        assert methods[label]["status"] == "failed"
        assert "fewer than one batch" in methods[label]["error"]
        assert "AP" not in methods[label]
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "| ae batch_size=4 | done |" in markdown and "- ae batch_size=1000: FAILED" in markdown
    assert "FAILED" in printed and "fewer than one batch" in printed
    assert {p for p in PLOTS if p != "oracle_study.png"} <= {p.name for p in (tmp_path / "out").glob("*.png")}
    assert "MISSING" not in markdown
    assert "## AP of the images of two or more people, by how close they stand" in markdown


def test_report_names_missing_and_running_runs(sweep: Path, tmp_path: Path) -> None:
    copy = copy_of(sweep, tmp_path)
    runs = {label: copy / m["run_dir"] for label, m in collect(copy)["methods"].items()}
    shutil.rmtree(runs["spm batch_size=4"])
    (runs["ae batch_size=4"] / "status.json").write_text(json.dumps({"status": "running", "epoch": 0}))
    methods = collect(copy)["methods"]
    assert methods["spm batch_size=4"]["status"] == "missing"
    assert "method=spm batch_size=4" in methods["spm batch_size=4"]["error"]
    assert methods["ae batch_size=4"]["status"] == "running"
    assert methods["ae batch_size=1000"]["status"] == "failed"
    assert main([str(copy)]) == 0
    markdown = (copy / "report" / "comparison.md").read_text()
    assert "- spm batch_size=4: MISSING" in markdown and "- ae batch_size=4: RUNNING" in markdown


def test_report_without_the_sweep_record_lists_the_runs_found(sweep: Path, tmp_path: Path) -> None:
    copy = copy_of(sweep, tmp_path)
    (copy / "multirun.yaml").write_text((copy / "multirun.yaml").read_text().replace(
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "hydra_plugins.hydra_optuna_sweeper.Optuna"))
    comparison = collect(copy)
    assert len(comparison["methods"]) == 4
    assert "unknown" in comparison["config"]["expected runs"]


def test_report_on_one_run_folder(sweep: Path) -> None:
    run = next(p.parent.parent for p in sweep.rglob(".hydra/config.yaml") if "batch_size=4," in str(p))
    methods = collect(run)["methods"]
    assert len(methods) == 1 and next(iter(methods.values()))["status"] == "done"


def test_evaluations_written_inside_a_run_are_not_runs(sweep: Path, tmp_path: Path) -> None:
    copy = copy_of(sweep, tmp_path)
    run = next(p.parent.parent for p in copy.rglob(".hydra/config.yaml") if "batch_size=4," in str(p))
    out = run / "eval_on_val"
    # Quoted: the sweep's run folder names hold '=' and ','.
    result = run_app("bottomup.evaluate", f"checkpoint='{run / 'checkpoint.pt'}'", "device=cpu",
                     f"output_dir='{out}'", f"hydra.run.dir='{out}'", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / ".hydra" / "config.yaml").exists()
    assert len(collect(copy)["methods"]) == 4
    assert len(collect(run)["methods"]) == 1


def test_report_on_a_folder_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert "holds no runs" in capsys.readouterr().err


def test_labels_show_what_varies() -> None:
    jobs = [["method=ae", "epochs=1"], ["method=spm", "epochs=1"]]
    assert job_labels(jobs, {}) == ["ae", "spm"]
    jobs = [["method=ae", "optim.lr=0.1"], ["method=ae", "optim.lr=0.2"]]
    assert job_labels(jobs, {}) == ["optim.lr=0.1", "optim.lr=0.2"]


def test_closeness_table_only_when_a_run_has_one() -> None:
    """Comparisons written before the closeness breakdown render without it; mixed ones show '-' for the old runs."""
    run = {"status": "done", "AP": 0.5}
    assert "how close they stand" not in to_markdown({"title": "old", "methods": {"a": run}})
    closeness = {"apart": {"AP": 0.6, "images": 3}, "close": {"AP": 0.2, "images": 2}}
    markdown = to_markdown({"title": "mixed", "methods": {"a": run, "b": dict(run, by_closeness=closeness)}})
    assert "| b | 0.600 (3) | 0.200 (2) |" in markdown and "| a | - | - |" in markdown
