"""Tables and plots of results, as printed by the apps and written to markdown and PNG.

``bottomup.compare`` and ``bottomup.report`` describe a set of runs with one *comparison* dict (``comparison.json``)
and render it with :func:`write_report`::

    {
      "title": str,
      "config": {name: value},                # what was compared, shown as a list under the title
      "methods": {label: {                    # one entry per run, in display order
          "status": "done" | "failed" | "running" | "missing",
          "error": str,                       # failed: the exception; missing/running: what is known
          "run_dir": str,                     # relative to the folder the comparison describes
          "AP", "AP50", "AP75", "APM", "APL", "AR": float,
          "by_people": {bucket: {"AP": float, "images": int, "decode_ms": float}},   # buckets "1", "2-3", ...
          "by_closeness": {bucket: {"AP": float, "images": int}},   # "apart", "close": images of 2+ people
          "decode_ms_per_image", "forward_ms_per_image", "params_M", "train_minutes": float}},
      "oracle_grid": {label: {detection: {grouping: {"AP", "AP50", ...}}}},   # optional; "predicted" | "ideal"
      "oracle_study": {"config": {...}, "kinds": {kind: {"levels": [float], "AP": {label: [float]}}}},  # optional
    }

Metrics are present only for ``done`` runs. Plots use matplotlib's object API (``Figure`` + Agg), so they need no
display and leave pyplot's global state alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bottomup.cli import write_atomic, write_json
from bottomup.evaluation.coco_eval import CLOSENESS_BUCKETS, CROWD_BUCKETS, bucket_name
from bottomup.geometry import CLOSE_NEIGHBOUR_GAP

METRICS = ("AP", "AP50", "AP75", "APM", "APL", "AR")
COSTS = ("decode_ms_per_image", "forward_ms_per_image", "params_M", "train_minutes")
BUCKETS = tuple(bucket_name(lo, hi) for lo, hi in CROWD_BUCKETS)
# Oracle grid cells as (detection, grouping): each half is the model's ("predicted") or rendered from the annotations.
GRID_CELLS = (("predicted", "predicted"), ("ideal", "predicted"), ("predicted", "ideal"), ("ideal", "ideal"))
# The plots write_report makes (when the comparison has data for them), by file name.
PLOTS = ("ap.png", "ap_by_people.png", "decode_ms_by_people.png", "oracle_study.png")


def format_value(value: object) -> str:
    """A table cell: floats to 3 decimals (whole numbers from 100 on), ``-`` for missing or NaN."""
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)


def format_table(rows: Mapping[str, Mapping[str, object]], columns: Sequence[str], first: str = "method") -> str:
    """A markdown table: one row per key of ``rows``, one column per name in ``columns`` (missing -> ``-``)."""
    header = f"| {first} | " + " | ".join(columns) + " |"
    rule = "|" + "---|" * (len(columns) + 1)
    body = [f"| {name} | " + " | ".join(format_value(row.get(c)) for c in columns) + " |" for name, row in rows.items()]
    return "\n".join([header, rule, *body])


# -- tables -----------------------------------------------------------------------------------------------------------

def by_people_rows(methods: Mapping[str, Mapping[str, Any]], key: str = "AP") -> dict[str, dict[str, object]]:
    """``{label: {bucket: by_people[bucket][key]}}`` of every method (``key``: ``AP``, ``images`` or ``decode_ms``)."""
    return {label: {b: entry.get(key) for b, entry in m.get("by_people", {}).items()} for label, m in methods.items()}


def closeness_rows(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, object]]:
    """``{label: {bucket: "AP (images)"}}`` of every method's ``by_closeness``."""
    return {label: {bucket: f"{format_value(entry.get('AP'))} ({entry.get('images', '-')})"
                    for bucket, entry in m.get("by_closeness", {}).items()}
            for label, m in methods.items()}


def grid_cell(detection: str, grouping: str) -> str:
    """Column name of an oracle grid cell, e.g. ``det ideal, grp pred``."""
    short = {"predicted": "pred", "ideal": "ideal"}
    return f"det {short[detection]}, grp {short[grouping]}"


def methods_table(methods: Mapping[str, Mapping[str, Any]]) -> str:
    """The main table: status, accuracy and cost of every run."""
    return format_table(methods, ("status", *METRICS, *COSTS))


def grid_table(grid: Mapping[str, Any]) -> str:
    """The oracle grid's AP, one column per cell of :data:`GRID_CELLS`."""
    return format_table(grid_rows(grid), [grid_cell(d, g) for d, g in GRID_CELLS])


def grid_rows(grid: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> dict[str, dict[str, object]]:
    """``{label: {cell column: AP}}`` of an oracle grid (see the module docstring)."""
    return {label: {grid_cell(d, g): cells.get(d, {}).get(g, {}).get("AP") for d, g in GRID_CELLS}
            for label, cells in grid.items()}


def study_rows(kind: Mapping[str, Any]) -> dict[str, dict[str, object]]:
    """``{label: {level: AP}}`` of one degradation kind of an oracle study."""
    levels = [f"{level:g}" for level in kind["levels"]]
    return {label: dict(zip(levels, aps)) for label, aps in kind["AP"].items()}


def problems(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per run that is not done: missing, failed (with its error) or still running."""
    lines = []
    for label, m in methods.items():
        status = m.get("status", "done")
        where = f" ({m['run_dir']})" if m.get("run_dir") else ""
        if status == "missing":
            lines.append(f"- {label}: MISSING{where}: {m.get('error', 'expected but no run folder was found')}")
        elif status == "failed":
            lines.append(f"- {label}: FAILED{where}: {m.get('error', 'no error recorded')}")
        elif status != "done":
            lines.append(f"- {label}: {status.upper()}{where}: {m.get('error', 'not finished')}")
    return lines


def to_markdown(comparison: Mapping[str, Any]) -> str:
    """The whole comparison as markdown: accuracy and cost, AP and decode time by crowd size, AP by how close people
    stand (when any run has it), oracle grid and study, and the runs that are missing, failed or still running."""
    methods = comparison["methods"]
    parts = [f"# {comparison.get('title', 'Comparison')}", ""]
    parts += [f"- {key}: {value}" for key, value in comparison.get("config", {}).items()]
    parts += ["", "## Accuracy and cost", "", methods_table(methods)]
    parts += ["", "## AP by people per image", "", format_table(by_people_rows(methods, "AP"), BUCKETS)]
    parts += ["", "## Images by people per image", "", format_table(by_people_rows(methods, "images"), BUCKETS)]
    parts += ["", "## Decode ms per image by people per image", "",
              format_table(by_people_rows(methods, "decode_ms"), BUCKETS)]
    if any(m.get("by_closeness") for m in methods.values()):
        parts += ["", "## AP of the images of two or more people, by how close they stand", "",
                  f"`close`: someone's nearest neighbour's centre lies within {CLOSE_NEIGHBOUR_GAP:g} x their size "
                  "(the longer side of their keypoints' box): overlapping people, the hard case for grouping; "
                  "`apart`: nobody's does. Images in brackets.", "",
                  format_table(closeness_rows(methods), CLOSENESS_BUCKETS)]
    grid = comparison.get("oracle_grid")
    if grid:
        parts += ["", "## Oracle grid: AP with ideal detection and/or grouping", "",
                  "`det` = keypoint detection maps, `grp` = grouping maps (tags, fields, displacements); `pred` = the "
                  "trained model's, `ideal` = rendered from the annotations. `det ideal, grp ideal` is the pure "
                  "oracle benchmark on the same images.", "", grid_table(grid)]
    study = comparison.get("oracle_study")
    if study:
        parts += ["", "## Oracle grouping study: AP vs degradation of ideal maps", ""]
        parts += [f"- {key}: {value}" for key, value in study.get("config", {}).items()]
        for kind, entry in study["kinds"].items():
            parts += ["", format_table(study_rows(entry), [f"{level:g}" for level in entry["levels"]],
                                       first=f"{kind} level")]
    issues = problems(methods)
    if issues:
        parts += ["", "## Runs not reported", "", *issues]
    return "\n".join(parts) + "\n"


def summary(comparison: Mapping[str, Any]) -> str:
    """What the apps print at the end: accuracy and cost, the oracle grid if any, and the runs not reported."""
    methods = comparison["methods"]
    parts = [methods_table(methods)]
    if comparison.get("oracle_grid"):
        parts += ["", grid_table(comparison["oracle_grid"])]
    issues = problems(methods)
    if issues:
        parts += ["", "Runs not reported:", *issues]
    return "\n".join(parts)


# -- plots ------------------------------------------------------------------------------------------------------------

def _done(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {label: m for label, m in methods.items() if m.get("status", "done") == "done"}


def ap_figure(methods: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Bars of AP, AP50 and AP75 per method (finished runs)."""
    done = _done(methods)
    fig = Figure(figsize=(max(4.0, 1.2 * len(done) + 2), 3.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / 3
    for i, metric in enumerate(("AP", "AP50", "AP75")):
        xs = [j + (i - 1) * width for j in range(len(done))]
        bars = ax.bar(xs, [m.get(metric, math.nan) for m in done.values()], width, label=metric)
        if metric == "AP":
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(done)), list(done))
    ax.set_ylabel("COCO keypoint AP")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("AP per method")
    return fig


def by_people_figure(methods: Mapping[str, Mapping[str, Any]], key: str = "AP", ylabel: str = "AP",
                     title: str = "AP vs people per image", log: bool = False) -> Figure:
    """One line per method of ``by_people[bucket][key]`` over the crowd buckets (missing buckets left out)."""
    fig = Figure(figsize=(5.5, 3.5), layout="constrained")
    ax = fig.subplots()
    for label, row in by_people_rows(_done(methods), key).items():
        ax.plot(range(len(BUCKETS)), [_number(row.get(b)) for b in BUCKETS], marker="o", label=label)
    ax.set_xticks(range(len(BUCKETS)), BUCKETS)
    ax.set_xlabel("people per image")
    ax.set_ylabel(ylabel)
    if key == "AP":
        ax.set_ylim(0, 1.02)
    if log:
        ax.set_yscale("log")
        # Plain numbers (0.5, 2, 30) rather than powers of ten: decode times span a decade or two at most.
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def oracle_study_figure(study: Mapping[str, Any]) -> Figure:
    """One panel per degradation kind: oracle AP vs level, one line per method."""
    kinds = study["kinds"]
    fig = Figure(figsize=(4.0 * len(kinds), 3.5), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, (kind, entry) in zip(axes, kinds.items()):
        for label, aps in entry["AP"].items():
            ax.plot(entry["levels"], aps, marker="o", label=label)
        ax.set_xlabel(f"{kind} level")
        ax.set_ylabel("oracle AP")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"ideal maps + {kind}")
    axes[0].legend(fontsize=8)
    return fig


def figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """The plots of :data:`PLOTS` that the comparison has data for, by file name."""
    methods = comparison["methods"]
    done = _done(methods)
    out: dict[str, Figure] = {}
    if done:
        out["ap.png"] = ap_figure(methods)
    if any(m.get("by_people") for m in done.values()):
        out["ap_by_people.png"] = by_people_figure(methods)
    if any(e.get("decode_ms") is not None for m in done.values() for e in m.get("by_people", {}).values()):
        out["decode_ms_by_people.png"] = by_people_figure(methods, "decode_ms", "decode ms per image (median)",
                                                          "Decode time vs people per image", log=True)
    if comparison.get("oracle_study"):
        out["oracle_study.png"] = oracle_study_figure(comparison["oracle_study"])
    return out


def write_report(comparison: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``comparison.json``, ``comparison.md`` and the PNG plots into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    paths = [write_json(out / "comparison.json", comparison),
             write_atomic(out / "comparison.md", to_markdown(comparison))]
    for name, fig in figures(comparison).items():
        fig.savefig(out / name, dpi=110)
        paths.append(out / name)
    return paths


def read_json(path: str | Path) -> Any:
    """A JSON file's content, or ``None`` when it is absent or cut short (a writer killed mid-way)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan
