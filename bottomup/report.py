"""``python -m bottomup.report DIR [--out OUT]``: the table and plots of a sweep or compare folder, and what is missing.

``DIR`` is one of:

* a compare folder (holding ``comparison.json``, from ``bottomup.compare``): its methods, each re-read from its run
  folder, with the oracle grid and oracle study;
* a sweep folder (from ``python -m bottomup.train -m ...``, on any launcher): every run below it (a folder holding
  ``.hydra/config.yaml``), labelled by the overrides that differ between runs. With Hydra's basic sweeper the runs
  that ``multirun.yaml`` asks for and that have no folder are reported missing. In a sweep of comparisons
  (``python -m bottomup.compare -m ...``) each method of each comparison is a row;
* a single run folder.

It writes ``comparison.json``, ``comparison.md`` and the plots (:mod:`bottomup.evaluation.report`) into ``OUT``
(default ``DIR/report``) and prints the table and the runs that are missing, failed (with their error) or still
running.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from bottomup.config import resolve_path
from bottomup.errors import BottomupError, DataError
from bottomup.evaluation.report import COSTS, METRICS, read_json, summary, write_report

COMPARISON = "comparison.json"
# Apps whose output folders (an evaluation written inside a run folder, say) are not runs.
NOT_RUNS = ("evaluate", "predict", "oracle", "model_info")
# What a run folder's metrics.json contributes to a comparison entry.
ENTRY_KEYS = (*METRICS, *COSTS, "by_people", "by_closeness", "images", "epochs")
_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def run_state(run_dir: str | Path) -> dict[str, Any]:
    """``{"status": "done" | "failed" | "running" | "missing", "error": ...}`` of a training run folder.

    A run killed without a chance to record its end still says ``running``; the message gives the age of its last
    status update, so a stale one stands out.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return {"status": "missing", "error": f"no run folder {run_dir}"}
    status = read_json(run_dir / "status.json")
    if status is None:
        if (run_dir / "metrics.json").exists():
            return {"status": "done"}
        return {"status": "running", "error": "no status.json yet: starting, or stopped before training began"}
    if status.get("status") == "failed":
        return {"status": "failed", "error": status.get("error", "no error recorded")}
    if status.get("status") == "done":
        return {"status": "done"}
    age = time.time() - (run_dir / "status.json").stat().st_mtime
    return {"status": "running", "error": f"at epoch {status.get('epoch', '?')}, status last updated "
                                          f"{age / 60:.0f} min ago (a killed run stays 'running')"}


def run_entry(run_dir: str | Path, base: str | Path) -> dict[str, Any]:
    """A comparison entry of one run: its state, its path relative to ``base`` and, when done, its metrics."""
    run_dir = Path(run_dir)
    entry: dict[str, Any] = {**run_state(run_dir), "run_dir": _relative(run_dir, Path(base))}
    if entry["status"] == "done":
        metrics = read_json(run_dir / "metrics.json") or {}
        entry.update({k: metrics[k] for k in ENTRY_KEYS if k in metrics})
    return entry


def collect(folder: str | Path) -> dict[str, Any]:
    """The comparison dict (see :mod:`bottomup.evaluation.report`) of a compare, sweep or run folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    if (folder / COMPARISON).exists():
        return collect_compare(folder)
    return collect_sweep(folder)


def collect_compare(folder: Path) -> dict[str, Any]:
    """A compare folder's comparison.json with every method re-read from its run folder."""
    comparison = read_json(folder / COMPARISON)
    if not isinstance(comparison, dict) or "methods" not in comparison:
        raise DataError(f"{folder / COMPARISON} is not a comparison written by bottomup.compare")
    methods = {label: run_entry(folder / m.get("run_dir", f"runs/{label}"), folder)
               for label, m in comparison["methods"].items()}
    grid = {label: cells for label, cells in comparison.get("oracle_grid", {}).items()
            if methods.get(label, {}).get("status") == "done"}
    return {**comparison, "methods": methods, "oracle_grid": grid}


def collect_sweep(folder: Path) -> dict[str, Any]:
    """Every run below a sweep folder (or the folder itself, if it is a run), plus the expected ones that are absent."""
    runs = {tuple(_job_overrides(path.parent.parent)): path.parent.parent
            for path in sorted(folder.rglob(".hydra/config.yaml")) if _app_of(path.parent.parent) not in NOT_RUNS}
    if not runs:
        raise DataError(f"{folder} holds no runs: neither {COMPARISON} (a compare folder) nor run folders with "
                        f".hydra/config.yaml (a sweep or a run of bottomup.train)")
    multirun = folder / "multirun.yaml"
    expected, note = expected_jobs(multirun) if multirun.exists() else (None, "not a sweep folder")
    found = {frozenset(job): run_dir for job, run_dir in runs.items()}
    asked = {frozenset(job) for job in expected or []}
    # The expected jobs in sweep order, then runs that the sweep did not ask for (another sweep into the same folder).
    jobs = [list(job) for job in expected or []] + [list(job) for job in runs if frozenset(job) not in asked]
    methods: dict[str, Any] = {}
    grid: dict[str, Any] = {}
    for label, job in zip(job_labels(jobs, runs), jobs):
        run_dir = found.get(frozenset(job))
        if run_dir is None:
            methods[label] = {"status": "missing", "error": f"multirun.yaml asks for a run with {' '.join(job)} "
                                                            f"but no run folder below {folder} holds one"}
        elif (run_dir / COMPARISON).exists():
            # A sweep of comparisons: one row per method of each, labelled by the job and the method.
            inner = collect_compare(run_dir)
            for method, entry in inner["methods"].items():
                methods[f"{label} {method}"] = {**entry, "run_dir": _relative(run_dir / entry["run_dir"], folder)}
            grid.update({f"{label} {method}": cells for method, cells in inner["oracle_grid"].items()})
        else:
            methods[label] = run_entry(run_dir, folder)
    counts = {s: sum(m["status"] == s for m in methods.values()) for s in ("done", "failed", "running", "missing")}
    config = {"folder": str(folder), "runs": ", ".join(f"{n} {s}" for s, n in counts.items() if n),
              "expected runs": note}
    return {"title": f"Runs in {folder.name}", "config": config, "methods": methods, "oracle_grid": grid}


def expected_jobs(multirun_yaml: Path) -> tuple[list[list[str]] | None, str]:
    """The override lists of the jobs a sweep asked for (``None`` if they cannot be known), and where they came from.

    Hydra's basic sweeper launches the cartesian product of its ``params`` and the command-line overrides; the same
    expansion here gives the jobs whatever launcher ran them. Other sweepers (Optuna, Nevergrad) choose their jobs as
    they go, so only the runs found can be reported.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(multirun_yaml)
    sweeper = OmegaConf.select(cfg, "hydra.sweeper._target_")
    if sweeper != _BASIC_SWEEPER:
        return None, f"unknown (sweeper {sweeper} picks its jobs as it goes)"
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
    overrides = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(overrides, None)
    return [list(job) for batch in batches for job in batch], f"from {multirun_yaml.name}: {' '.join(arguments)}"


def job_labels(jobs: Sequence[Sequence[str]], runs: dict[tuple[str, ...], Path]) -> list[str]:
    """A short unique label per job: the overrides whose value differs between jobs (``method=ae`` shown as ``ae``);
    with nothing differing, the method's name."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    varying = {k for k, v in values.items() if len(v) > 1}
    labels: list[str] = []
    for job in jobs:
        parts = []
        for override in job:
            key, _, value = override.partition("=")
            if key in varying:
                parts.append(value if key == "method" else override)
        label = " ".join(parts) or _method_name(runs.get(tuple(job)))
        labels.append(label if label not in labels else f"{label} #{len(labels) + 1}")
    return labels


def _app_of(run_dir: Path) -> str | None:
    """The Hydra app that wrote ``run_dir`` (``train`` for ``python -m bottomup.train``), if it says."""
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    return OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.name") if hydra_yaml.exists() else None


def _job_overrides(run_dir: Path) -> list[str]:
    overrides = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(overrides)] if overrides.exists() else []


def _method_name(run_dir: Path | None) -> str:
    if run_dir is None:
        return "run"
    return str(OmegaConf.select(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), "method.name",
                                default=run_dir.name))


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bottomup.report",
                                     description="The table and plots of a sweep, compare or run folder, and the runs "
                                                 "that are missing, failed or still running.")
    parser.add_argument("folder", help="a compare folder, a sweep folder (python -m bottomup.train -m ...) or a run")
    parser.add_argument("--out", help="where to write comparison.json/.md and the plots (default: FOLDER/report)")
    args = parser.parse_args(argv)
    folder = resolve_path(args.folder)
    try:
        comparison = collect(folder)
    except BottomupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = resolve_path(args.out) if args.out else folder / "report"
    write_report(comparison, out)
    print(summary(comparison))
    print(f"wrote {out}/comparison.md, comparison.json and the plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
