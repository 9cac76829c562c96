"""``python -m bottomup.compare``: every grouping method on one trunk, one dataset and one budget (conf/compare.yaml).

For each method of ``methods`` it trains the train config composed with ``method=<m>``, its trunk, data, optim and
every setting of the same name replaced by compare's own, so that the runs differ in the method only, into
``<run folder>/runs/<m>``. Then, on rank 0:

* the oracle grid of every method: the model as trained (predicted detection and grouping), with ideal detection maps
  (``oracle=heatmaps``), with ideal grouping maps (``oracle=grouping``), and the pure oracle benchmark (both ideal)
  on the same val images at the same input size;
* the oracle grouping study: every method's ideal maps degraded by each level of ``oracle.levels``;
* ``comparison.json``, ``comparison.md`` and the plots (:mod:`bottomup.evaluation.report`); the table is printed.

Re-running the same command resumes: a finished method run is reused as it is, an interrupted one continues from its
checkpoint (:class:`~bottomup.training.trainer.Trainer`), and the evaluations already made are read back from their
cache files. A run folder holding a run trained with other settings is refused rather than silently mixed in.
Works under ``torchrun`` (every process trains; evaluation, oracle and report run on rank 0) and any Hydra launcher
(all paths come from the config, none from the working directory).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bottomup.cli import debug_enabled, friendly_errors, set_threads, write_json
from bottomup.config import build_method, compose, group_options, resolve_path
from bottomup.data import CocoKeypoints, build_dataset
from bottomup.errors import ConfigError
from bottomup.evaluation import inference
from bottomup.evaluation.coco_eval import Annotations, load_annotations
from bottomup.evaluation.degrade import Degradation
from bottomup.evaluation.oracle import run_oracle
from bottomup.evaluation.report import METRICS, read_json, summary, write_report
from bottomup.methods.base import Codec
from bottomup.report import run_entry
from bottomup.training.distributed import Context, barrier, setup, teardown
from bottomup.training.trainer import CHECKPOINT, DECODE_ONLY, STATUS, Trainer, load_model, record_failure

RUNS = "runs"
RUN_CONFIG = "run_config.json"
# Settings that change how a run is carried out, not what it learns: a finished run made with other values of these
# is reused (``eval`` changes only re-evaluate it).
RUN_ONLY = ("workers", "device", "threads", "log_every", "eval_every", "debug", "eval", "data.root")
# What the oracle grid keeps of each cell's metrics.
CELL_KEYS = (*METRICS, "images")


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """The train config with ``overrides``: through the running Hydra app (so its search path and plugins apply),
    or composed from conf/ when called outside one (tests, notebooks)."""
    if GlobalHydra.instance().is_initialized():
        return hydra.compose(config_name="train", overrides=list(overrides))
    return compose("train", overrides)


def run_config(cfg: DictConfig, method: str) -> DictConfig:
    """The train config of ``method`` in a comparison: ``method=<method>``, then every top-level setting that compare
    also has (trunk, data, optim, epochs, batch_size, eval, ...) taken from compare, then the method's overrides."""
    try:
        run_cfg = compose_train([f"method={method}"])
    except MissingConfigException:
        raise ConfigError(f"unknown method {method!r} in methods; choose from {group_options('method')}") from None
    for key in run_cfg:
        if key != "method" and key in cfg:
            run_cfg[key] = cfg[key]
    overrides = (cfg.get("method_overrides") or {}).get(method)
    if overrides:
        run_cfg.method = OmegaConf.merge(run_cfg.method, overrides)
    return run_cfg


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved run configs, leaving out :data:`RUN_ONLY` settings."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys()
                  if a.get(k) != b.get(k) and not any(k == r or k.startswith(r + ".") for r in RUN_ONLY))


def check_reusable(run_cfg: DictConfig, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds this run finished and evaluated as asked (reuse it as it is).

    Raises:
        ConfigError: the folder holds a checkpoint of other settings, which resuming would mix with this run (a run
            that failed before its first checkpoint is simply started again).
    """
    stored = read_json(run_dir / RUN_CONFIG)
    if stored is None:
        return False
    current = OmegaConf.to_container(run_cfg, resolve=True)
    changed = changed_settings(stored, current)
    # New decoder options leave the weights valid: the run is resumed, which only evaluates it again.
    retrain = [k for k in changed if not k.startswith(f"method.{DECODE_ONLY}.")]
    if retrain and (run_dir / CHECKPOINT).exists():
        before, after = _flatten(stored), _flatten(current)
        diff = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in retrain)
        raise ConfigError(f"{run_dir} holds a run of {run_cfg.method.name} trained with other settings ({diff}); "
                          f"delete that folder to retrain, or compare into another folder with hydra.run.dir=...")
    status = read_json(run_dir / STATUS) or {}
    return not changed and status.get("status") == "done" and stored.get("eval") == current["eval"] and \
        (run_dir / "metrics.json").exists()


def train(run_cfg: DictConfig, run_dir: Path, ctx: Context, reuse: bool) -> None:
    """Train (or resume) one method's run unless ``reuse``; a failure is recorded in its status.json and raised."""
    if reuse:
        if ctx.main:
            print(f"[compare] {run_cfg.method.name}: finished run reused from {run_dir}", flush=True)
        return
    if ctx.main:
        # The run's resolved config: what check_reusable compares a later invocation against.
        write_json(run_dir / RUN_CONFIG, OmegaConf.to_container(run_cfg, resolve=True))
    try:
        Trainer(run_cfg, run_dir).fit()
    except Exception as err:
        if ctx.main:
            record_failure(run_dir, err)
        raise


def cached(path: Path, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()``, or the result stored at ``path`` by an earlier call with the same ``key`` (JSON values)."""
    key = json.loads(json.dumps(key))
    stored = read_json(path)
    if isinstance(stored, dict) and stored.get("key") == key:
        return stored["value"]
    value = compute()
    write_json(path, {"key": key, "value": value})
    return value


def model_cells(run_dir: Path, run_cfg: DictConfig, dataset: CocoKeypoints, count: int, cfg: DictConfig,
                ctx: Context) -> dict[str, dict[str, float]]:
    """``{"heatmaps": metrics, "grouping": metrics}``: the trained model, decoded as ``run_cfg`` says, evaluated with
    ideal detection maps and with ideal grouping maps on the first ``count`` images of ``dataset`` (cached in the run
    folder)."""
    metrics = read_json(run_dir / "metrics.json") or {}
    options = inference.InferenceOptions.from_config(cfg.eval, bool(cfg.amp))
    decoder = OmegaConf.to_container(run_cfg.method[DECODE_ONLY], resolve=True)

    def compute() -> dict[str, dict[str, float]]:
        model, _ = load_model(run_dir / CHECKPOINT, ctx.device, decoder)
        cells = {}
        for oracle in ("heatmaps", "grouping"):
            result = inference.run(model, dataset, dataclasses.replace(options, oracle=oracle), ctx.device,
                                   indices=range(count))
            scored = inference.score(dataset, result)
            cells[oracle] = {k: scored[k] for k in CELL_KEYS}
        return cells

    key = {"steps": metrics.get("steps"), "images": count, **dataclasses.asdict(options), "decoder": decoder}
    return cached(run_dir / "oracle_cells.json", key, compute)


def oracle_study(annotations: Annotations, codecs: Mapping[str, Codec], input_size: int,
                 levels: Mapping[str, Sequence[float]], seed: int = 0, image_ids: Sequence[int] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Oracle AP of every codec's ideal maps degraded, one kind at a time, to each level.

    Args:
        annotations: the annotation file whose people are rendered.
        codecs: ``{label: codec}``.
        input_size: square input side each image is fitted into.
        levels: ``{kind: [level, ...]}`` with kinds the fields of :class:`Degradation` (noise, jitter, dropout,
            tag_noise, displacement_noise); level 0 (ideal maps) is added to every kind and computed once.
        seed: seeds every degradation.
        image_ids: the images to use (default: all).
        progress: print a line per oracle run.
    Returns:
        ``{"config": {...}, "kinds": {kind: {"levels": [0, ...], "AP": {label: [AP per level]}}}}``.
    """
    runs: dict[tuple[str, float], dict[str, Any]] = {}
    plan = [("ideal", 0.0)] + [(kind, float(level)) for kind, values in levels.items() for level in values if level]
    for n, (kind, level) in enumerate(plan):
        if progress:
            print(f"[compare] oracle study {n + 1}/{len(plan)}: {kind} {level:g}", flush=True)
        degradation = Degradation(**{kind: level}) if level else Degradation()
        runs[(kind, level)] = run_oracle(annotations, codecs, input_size, degradation, seed, image_ids=image_ids)
    ideal = runs[("ideal", 0.0)]
    kinds = {}
    for kind, values in levels.items():
        ordered = [0.0] + sorted(float(v) for v in values if v)
        results = [runs[(kind, v) if v else ("ideal", 0.0)]["results"] for v in ordered]
        kinds[kind] = {"levels": ordered, "AP": {label: [r[label]["AP"] for r in results] for label in codecs}}
    first = next(iter(ideal["results"].values()), {})
    config = {"annotations": ideal["config"]["annotations"], "input_size": input_size, "seed": seed,
              "images": first.get("images", 0), "people": first.get("people", 0)}
    return {"config": config, "kinds": kinds}


def compare(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any] | None:
    """Run the whole comparison into ``out_dir``; returns the comparison dict on rank 0 (``None`` on other ranks)."""
    out = Path(out_dir)
    methods = [str(m) for m in cfg.methods]
    if not methods or len(set(methods)) != len(methods):
        raise ConfigError(f"methods must name each method once, got {methods}")
    set_threads(cfg.threads)
    ctx = setup(str(cfg.device))
    run_cfgs = {m: run_config(cfg, m) for m in methods}
    # Every folder is checked before anything trains, so a stale one stops the comparison at once.
    reuse = {m: check_reusable(run_cfgs[m], out / RUNS / m) for m in methods}
    if ctx.main:
        write_json(out / "comparison.json", _comparison(cfg, {m: run_entry(out / RUNS / m, out) for m in methods}))
    for n, m in enumerate(methods):
        if ctx.main:
            print(f"[compare] method {n + 1}/{len(methods)}: {m}", flush=True)
        try:
            train(run_cfgs[m], out / RUNS / m, ctx, reuse[m])
        except Exception as err:
            if debug_enabled(cfg):
                raise
            if ctx.main:
                print(f"[compare] {m} failed ({type(err).__name__}: {err}); the comparison goes on", flush=True)
    barrier(ctx)
    if not ctx.main:
        return None
    entries = {m: run_entry(out / RUNS / m, out) for m in methods}
    val_set = build_dataset(cfg.data, "val", train=False)
    grid = oracle_grid(cfg, run_cfgs, entries, val_set, out, ctx)
    study = study_of(cfg, run_cfgs, val_set, out)
    comparison = _comparison(cfg, entries, grid, study)
    write_report(comparison, out)
    print(summary(comparison))
    print(f"wrote {out}/comparison.json, comparison.md and the plots", flush=True)
    return comparison


def oracle_grid(cfg: DictConfig, run_cfgs: Mapping[str, DictConfig], entries: Mapping[str, dict[str, Any]],
                val_set: CocoKeypoints, out: Path, ctx: Context) -> dict[str, Any]:
    """The 2x2 oracle grid of every finished method on the evaluated val images (``{method: {detection: {grouping:
    metrics}}}``): the model's own evaluation, its two oracle evaluations and the pure oracle benchmark."""
    done = [m for m, e in entries.items() if e["status"] == "done"]
    if not done:
        return {}
    count = len(inference.first_images(val_set, cfg.eval.max_images))
    image_ids = val_set.image_ids[:count]
    input_size = int(cfg.data.input_size)
    print(f"[compare] oracle grid: {len(done)} methods on {count} val images", flush=True)
    codecs = {m: build_method(run_cfgs[m].method, val_set.skeleton).codec for m in done}
    key = {"images": image_ids, "input_size": input_size, "methods": {m: _method_key(run_cfgs[m]) for m in done}}
    ideal = cached(out / "oracle_grid.json", key,
                   lambda: run_oracle(Annotations(val_set.file, val_set.coco), codecs, input_size,
                                      image_ids=image_ids)["results"])
    grid = {}
    for m in done:
        cells = model_cells(out / RUNS / m, run_cfgs[m], val_set, count, cfg, ctx)
        grid[m] = {"predicted": {"predicted": {k: entries[m].get(k) for k in CELL_KEYS}, "ideal": cells["grouping"]},
                   "ideal": {"predicted": cells["heatmaps"], "ideal": {k: ideal[m][k] for k in CELL_KEYS}}}
    return grid


def study_of(cfg: DictConfig, run_cfgs: Mapping[str, DictConfig], val_set: CocoKeypoints,
             out: Path) -> dict[str, Any]:
    """The oracle grouping study of every method as ``cfg.oracle`` asks (cached in ``out``)."""
    study_cfg = cfg.oracle
    if study_cfg.annotations is None:
        annotations = Annotations(val_set.file, val_set.coco)
    else:
        annotations = load_annotations(resolve_path(study_cfg.annotations))
    codecs = {m: build_method(run_cfg.method, annotations.skeleton).codec for m, run_cfg in run_cfgs.items()}
    image_ids = sorted(annotations.coco.getImgIds())
    if study_cfg.max_images is not None:
        image_ids = image_ids[:int(study_cfg.max_images)]
    input_size = int(study_cfg.input_size or cfg.data.input_size)
    levels = OmegaConf.to_container(study_cfg.levels)
    key = {"annotations": str(annotations.file.path), "images": image_ids, "input_size": input_size, "levels": levels,
           "seed": int(study_cfg.seed), "methods": {m: _method_key(run_cfg) for m, run_cfg in run_cfgs.items()}}
    return cached(out / "oracle_study.json", key,
                  lambda: oracle_study(annotations, codecs, input_size, levels, int(study_cfg.seed), image_ids,
                                       progress=True))


def _comparison(cfg: DictConfig, entries: dict[str, Any], grid: dict[str, Any] | None = None,
                study: dict[str, Any] | None = None) -> dict[str, Any]:
    optim = cfg.optim
    config = {
        "trunk": cfg.trunk.name, "data": f"{cfg.data.name} (input {cfg.data.input_size})", "epochs": cfg.epochs,
        "batch size (per process)": cfg.batch_size, "seed": cfg.seed,
        "optimizer": f"{optim.name} lr {optim.lr}, {optim.schedule} schedule, {optim.warmup_steps} warm-up steps",
        "evaluation": f"flip {cfg.eval.flip}, scales {list(cfg.eval.scales)}, "
                      f"{'all' if cfg.eval.max_images is None else 'first ' + str(cfg.eval.max_images)} val images",
    }
    comparison: dict[str, Any] = {"title": f"Grouping methods on {cfg.trunk.name}, data {cfg.data.name}",
                                  "config": config, "methods": entries}
    if grid:
        comparison["oracle_grid"] = grid
    if study:
        comparison["oracle_study"] = study
    return comparison


def _method_key(run_cfg: DictConfig) -> dict[str, Any]:
    # What makes a method's ideal maps and decoding: the oracle caches are valid as long as this is unchanged.
    return OmegaConf.to_container(run_cfg.method, resolve=True)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@hydra.main(config_path="../conf", config_name="compare", version_base=None)
@friendly_errors
def main(cfg: DictConfig) -> None:
    try:
        comparison = compare(cfg, resolve_path(cfg.output_dir))
    finally:
        teardown()
    failed = [m for m, e in (comparison or {}).get("methods", {}).items() if e["status"] != "done"]
    # A failed method fails the command, except inside a sweep of comparisons, which goes on like a training sweep.
    if failed and HydraConfig.get().mode == RunMode.RUN:
        print(f"error: {len(failed)} of {len(comparison['methods'])} methods did not finish: {', '.join(failed)} "
              f"(see comparison.md)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
