"""Optimizers and learning-rate schedules from the ``optim`` config (``conf/optim/*.yaml``)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from bottomup.errors import ConfigError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "step", "cosine")


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``cfg``: ``name`` (adam | adamw), ``lr``, ``weight_decay``."""
    name = str(cfg["name"])
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r} (optim.name); choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0)))


def lr_factor(step: int, steps_per_epoch: int, epochs: int, cfg: Mapping[str, Any]) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``.

    A linear warm-up over ``warmup_steps`` (from ``warmup_factor``), then ``schedule``: ``constant``; ``step``
    (times ``gamma`` at each epoch in ``milestones``); ``cosine`` (to ``min_factor`` at the last epoch).
    """
    schedule = str(cfg.get("schedule", "constant"))
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r} (optim.schedule); choose one of {SCHEDULES}")
    epoch = step / max(1, steps_per_epoch)
    if schedule == "step":
        factor = float(cfg.get("gamma", 0.1)) ** sum(epoch >= m for m in cfg.get("milestones", ()))
    elif schedule == "cosine":
        floor = float(cfg.get("min_factor", 0.0))
        factor = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, epoch / max(1, epochs))))
    else:
        factor = 1.0
    warmup = int(cfg.get("warmup_steps", 0))
    if step < warmup:
        start = float(cfg.get("warmup_factor", 0.001))
        factor *= start + (1 - start) * step / warmup
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int,
                    cfg: Mapping[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler following :func:`lr_factor` (which LambdaLR calls at once: a bad schedule fails here)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, epochs, cfg))
