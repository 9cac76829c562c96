"""``python -m bottomup.evaluate checkpoint=PATH``: COCO keypoint AP of a trained model (see conf/evaluate.yaml).

Fits every image into the input keeping its aspect, optionally flip- and multi-scale-tests, decodes, maps the poses
back to the image and scores them with COCOeval. Prints the standard table and writes ``results.json`` (COCO
results) and ``metrics.json`` (AP, AP50, AP75, APM, APL, AR, decode and forward ms per image, AP by people per
image). ``oracle=heatmaps`` / ``oracle=grouping`` swap that half of the outputs for ideal maps.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from bottomup.cli import decoder_overrides, friendly_errors, set_threads, write_json
from bottomup.config import resolve_path
from bottomup.data import build_dataset
from bottomup.errors import ConfigError, config_errors
from bottomup.evaluation import inference
from bottomup.evaluation.report import format_table
from bottomup.training.distributed import setup
from bottomup.training.trainer import load_model


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Metrics of ``cfg.checkpoint`` on ``cfg.data`` (or its own data), as written to ``metrics.json``."""
    set_threads(cfg.threads)
    ctx = setup(str(cfg.device))
    path = resolve_path(cfg.checkpoint)
    decoder = decoder_overrides(cfg)
    model, state = load_model(path, ctx.device, decoder)
    data_cfg = cfg.data if cfg.get("data") is not None else OmegaConf.create(state["config"]["data"])
    if cfg.input_size is not None:
        data_cfg = OmegaConf.merge(data_cfg, {"input_size": int(cfg.input_size)})
    dataset = build_dataset(data_cfg, str(cfg.split), train=False)
    if dataset.skeleton.keypoints != model.codec.skeleton.keypoints:
        raise ConfigError(f"data {data_cfg.get('name')!r} ({dataset.file.path}) has keypoints "
                          f"{list(dataset.skeleton.keypoints)}, but checkpoint {path} predicts "
                          f"{list(model.codec.skeleton.keypoints)}; evaluate it on data with its own keypoints")
    with config_errors("evaluation options"):
        options = inference.InferenceOptions.from_config(cfg, bool(cfg.amp), oracle=str(cfg.oracle))
    inference.warn_if_flip_untrained(options, state["config"]["data"])
    indices = inference.first_images(dataset, cfg.max_images)
    result = inference.run(model, dataset, options, ctx.device, indices=indices, progress=True)
    metrics = inference.score(dataset, result, verbose=True)
    out = Path(resolve_path(cfg.output_dir))
    write_json(out / "results.json", result.results)
    metrics["config"] = {"checkpoint": str(cfg.checkpoint), "data": str(data_cfg.get("name")), "split": cfg.split,
                         "flip": bool(cfg.flip), "scales": list(cfg.scales), "oracle": str(cfg.oracle),
                         "decoder": decoder}
    write_json(out / "metrics.json", metrics)
    return metrics


@hydra.main(config_path="../conf", config_name="evaluate", version_base=None)
@friendly_errors
def main(cfg: DictConfig) -> None:
    metrics = evaluate_checkpoint(cfg)
    print(format_table({"all": metrics}, ("AP", "AP50", "AP75", "APM", "APL", "AR", "decode_ms_per_image",
                                          "forward_ms_per_image"), first="images"))
    print(format_table(metrics["by_people"], ("AP", "images"), first="people per image"))
    if metrics["by_closeness"]:
        print(format_table(metrics["by_closeness"], ("AP", "images"), first="two or more people"))
    print(f"wrote {cfg.output_dir}/metrics.json and results.json")


if __name__ == "__main__":
    main()
