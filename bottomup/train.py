"""``python -m bottomup.train``: train any trunk x method on any COCO-format dataset (see conf/train.yaml).

Single process on CPU or one GPU, or ``torchrun --nproc_per_node=N -m bottomup.train ...`` for several. Re-running
the same command resumes the run. In a sweep (``-m``) a failing run is recorded as failed and the others go on.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bottomup.cli import debug_enabled, friendly_errors
from bottomup.training.distributed import teardown
from bottomup.training.trainer import Trainer, record_failure


@hydra.main(config_path="../conf", config_name="train", version_base=None)
@friendly_errors
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    try:
        Trainer(cfg, run_dir).fit()
    except Exception as err:
        record_failure(run_dir, err)
        if hydra_cfg.mode == RunMode.MULTIRUN and not debug_enabled(cfg):
            print(f"[train] run {run_dir} failed ({type(err).__name__}: {err}); the sweep goes on", flush=True)
            return
        raise
    finally:
        teardown()


if __name__ == "__main__":
    main()
