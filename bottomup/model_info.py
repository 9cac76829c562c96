"""Parameters, multiply-adds and output shapes of a trunk x method model, printed as JSON.

    python -m bottomup.model_info trunk=hrnet_w32 method=higherhrnet input_size=512

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device (shapes only, no compute)
and reported as multiply-adds (counted FLOPs / 2) in units of 1e9. The HRNet papers' "GFLOPs" are multiply-adds too,
but their counter divides by 2^30: its 7.1 for HRNet-W32 at 256x192 is 7.64 here (``tests/test_trunks.py`` checks
that). The counter sees convolutions and matrix products only, so BatchNorm, activations and resampling are not
counted.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from bottomup.cli import friendly_errors
from bottomup.config import build_model
from bottomup.errors import ConfigError, config_errors, model_choice
from bottomup.skeletons import get_skeleton


def model_info(trunk_cfg: DictConfig | str, method_cfg: DictConfig | str, skeleton: str = "coco",
               input_size: int | Sequence[int] = 512) -> dict[str, Any]:
    """``{"params_M", "gflops", "outputs"}`` of the model on one ``[1, 3, H, W]`` image.

    Args:
        trunk_cfg, method_cfg: configs, or names in ``conf/trunk`` and ``conf/method``.
        skeleton: built-in skeleton name.
        input_size: square side, or ``(width, height)``.
    Returns:
        parameters in millions, multiply-adds in billions, and the shape ``[1, C, H, W]`` of each output of the
        final prediction.
    """
    width, height = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    try:
        layout = get_skeleton(skeleton)
    except KeyError as err:  # its message lists the built-in skeletons
        raise ConfigError(err.args[0]) from None
    with torch.device("meta"), config_errors(f"{model_choice(trunk_cfg, method_cfg)} cannot be built"):
        model = build_model(trunk_cfg, method_cfg, layout).eval()
        with FlopCounterMode(display=False) as counter:
            prediction = model.predict(torch.zeros(1, 3, height, width))
    return {
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "gflops": round(counter.get_total_flops() / 2 / 1e9, 3),
        "outputs": {name: list(maps.shape) for name, maps in prediction.items()},
    }


@hydra.main(config_path="../conf", config_name="model_info", version_base=None)
@friendly_errors
def main(cfg: DictConfig) -> None:
    input_size = OmegaConf.to_object(cfg.input_size) if OmegaConf.is_list(cfg.input_size) else int(cfg.input_size)
    print(json.dumps(model_info(cfg.trunk, cfg.method, cfg.skeleton, input_size)))


if __name__ == "__main__":
    main()
