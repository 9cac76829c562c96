"""``python -m bottomup.oracle``: how well can each grouping strategy group, at best, on real crowd statistics?

Renders every method's ideal head outputs from a COCO-format annotation file, optionally degrades them, decodes,
and scores with COCOeval. Prints a table and writes ``{"config": ..., "results": {method: metrics}}`` as JSON.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from bottomup.cli import friendly_errors, set_threads, write_json
from bottomup.config import build_method, load_group, resolve_path
from bottomup.errors import ConfigError, config_errors
from bottomup.evaluation.coco_eval import CLOSENESS_BUCKETS, load_annotations
from bottomup.evaluation.degrade import Degradation
from bottomup.evaluation.oracle import run_oracle
from bottomup.evaluation.report import METRICS, closeness_rows, format_table


def method_config(name: str, variants: DictConfig) -> DictConfig:
    """The config of ``name``: a ``conf/method`` entry, or a variant (base method + overrides)."""
    if name in variants:
        variant = OmegaConf.to_container(variants[name])
        base = load_group("method", variant.pop("method"))
        return OmegaConf.merge(base, variant)
    try:
        return load_group("method", name)
    except ConfigError as err:
        raise ConfigError(f"{err} or a variant {sorted(variants)}") from None


@hydra.main(config_path="../conf", config_name="oracle", version_base=None)
@friendly_errors
def main(cfg: DictConfig) -> None:
    set_threads(cfg.threads)
    annotations = load_annotations(resolve_path(cfg.annotations))
    codecs = {}
    for name in cfg.methods:
        with config_errors(f"method {name!r} cannot be built for the skeleton of {annotations.file.path}"):
            codecs[name] = build_method(method_config(name, cfg.variants), annotations.skeleton).codec
    report = run_oracle(annotations, codecs, input_size=cfg.input_size,
                        degradation=Degradation(**cfg.degrade), seed=cfg.seed)
    path = write_json(resolve_path(cfg.output), report)
    print(format_table(report["results"], (*METRICS, "decode_ms_per_image")))
    if any(result["by_closeness"] for result in report["results"].values()):
        print("\nAP of the images of two or more people, by how close they stand (images in brackets):")
        print(format_table(closeness_rows(report["results"]), CLOSENESS_BUCKETS))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
