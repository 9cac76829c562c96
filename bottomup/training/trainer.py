"""The training loop: any trunk x method x dataset, on CPU or GPUs, resumable exactly.

A run lives in one folder:

* ``checkpoint.pt``: model, optimizer, scheduler, gradient scaler, epoch, step, random generators and the config,
  rewritten atomically after every epoch. Starting the same run again continues from it.
* ``metrics.jsonl``: one JSON object per line: ``{"type": "step", ...}`` every ``log_every`` steps (loss parts,
  learning rate, images/s) and ``{"type": "eval", ...}`` after evaluations, each with the 0-based ``epoch`` it
  belongs to. Lines of epochs that a resumed run repeats are dropped on resume, and a line cut short by a kill is
  skipped by :func:`read_log`.
* ``metrics.json``: the final evaluation, parameters and training time; ``status.json``: running/done/failed.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from bottomup.cli import remove_partial_writes, set_threads, write_atomic, write_json
from bottomup.config import PRETRAINED, build_model, resolve_path
from bottomup.data import build_dataset, build_loader
from bottomup.errors import CheckpointError, ConfigError, config_errors, model_choice
from bottomup.evaluation import inference
from bottomup.model import PoseModel, mixed_precision, precision_description
from bottomup.skeletons import Skeleton
from bottomup.training import checkpoint
from bottomup.training.distributed import Context, barrier, broadcast_object, setup, sync_buffers
from bottomup.training.optim import build_optimizer, build_scheduler
from bottomup.trunks.base import load_pretrained

CHECKPOINT = "checkpoint.pt"
STATUS = "status.json"  # running (with the epoch reached) / done / failed; read by bottomup.report and compare
LOG = "metrics.jsonl"
# Config sections that define the network; a checkpoint made with others cannot be resumed or evaluated as this run.
MODEL_KEYS = ("trunk", "method")
# The method options that only say how outputs are decoded: a checkpoint resumes, evaluates and predicts under new ones.
DECODE_ONLY = "decoder"


def network_config(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The part of a run config's ``key`` section (a :data:`MODEL_KEYS` entry) that the network depends on: without
    the method's decoder options and the trunk's starting weights (a checkpoint holds its own)."""
    section = dict(config.get(key) or {})
    section.pop(DECODE_ONLY if key == "method" else PRETRAINED, None)
    return section


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a ``metrics.jsonl``, skipping a last line cut short by a killed process."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def record_failure(run_dir: str | Path, err: BaseException) -> None:
    """Mark a run folder's ``status.json`` as failed, with the error and its traceback (read by ``bottomup.report``).

    Call from the ``except`` block that caught ``err``."""
    write_json(Path(run_dir) / STATUS, {"status": "failed", "error": f"{type(err).__name__}: {err}",
                                        "traceback": traceback.format_exc()})


def skeleton_state(skeleton: Skeleton) -> dict[str, Any]:
    return {"name": skeleton.name, "keypoints": list(skeleton.keypoints), "limbs": [list(l) for l in skeleton.limbs],
            "flip_pairs": [list(p) for p in skeleton.flip_pairs], "sigmas": list(skeleton.sigmas),
            "paf_limbs": None if skeleton.paf_limbs is None else [list(l) for l in skeleton.paf_limbs]}


def skeleton_from_state(state: dict[str, Any]) -> Skeleton:
    return Skeleton(**state)


def model_from_checkpoint(state: dict[str, Any], source: str | Path = "the checkpoint",
                          decoder: Mapping[str, Any] | None = None) -> PoseModel:
    """The network a checkpoint holds, with its weights, in eval mode (for evaluation and prediction); ``decoder``
    replaces some of the method's decoder options (e.g. ``{"snap": None}``).

    Raises:
        CheckpointError: naming ``source`` (the checkpoint's path), when its config no longer builds a model (e.g. a
            checkpoint of another bottomup version) or its weights do not fit that model.
    """
    cfg = OmegaConf.create(state["config"])
    if decoder:
        cfg.method[DECODE_ONLY] = OmegaConf.merge(cfg.method.get(DECODE_ONLY) or {}, decoder)
    choice = model_choice(cfg.trunk, cfg.method)
    with config_errors(f"the model of {source} ({choice}) cannot be built"):
        model = build_model(cfg.trunk, cfg.method, skeleton_from_state(state["skeleton"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # torch lists the missing, unexpected and mis-shaped weights
        raise CheckpointError(f"the weights in {source} do not fit its model ({choice}): {err}") from None
    return model.eval()


def load_model(path: str | Path, device: torch.device,
               decoder: Mapping[str, Any] | None = None) -> tuple[PoseModel, dict[str, Any]]:
    """The model of the checkpoint at ``path`` on ``device``, in eval mode (decoder options replaced by ``decoder``),
    and the checkpoint's state dict."""
    state = checkpoint.load(path, map_location="cpu")
    return model_from_checkpoint(state, path, decoder).to(device), state


class Trainer:
    """Trains ``cfg.trunk`` x ``cfg.method`` on ``cfg.data`` into ``run_dir`` (see the module docstring)."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ctx: Context = setup(str(cfg.device))
        set_threads(cfg.threads)
        torch.manual_seed(int(cfg.seed))
        self.train_set = build_dataset(cfg.data, "train", seed=int(cfg.seed))
        self.skeleton = self.train_set.skeleton
        # The trunk and method constructors check their arguments; a combination they refuse (an odd HigherHRNet
        # stride, a codec stride the trunk lacks) is reported as a config error naming both choices.
        with config_errors(f"{model_choice(cfg.trunk, cfg.method)} cannot be built"):
            model = build_model(cfg.trunk, cfg.method, self.skeleton).to(self.ctx.device)
        method = model.method
        self.train_set.codec = method.codec
        self.val_set = build_dataset(cfg.data, "val", train=False)
        if cfg.sync_bn and self.ctx.distributed and self.ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.net: nn.Module = model
        if self.ctx.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.ctx.local_rank] if self.ctx.device.type == "cuda" else None)
        self.loss_fn = method.build_loss().to(self.ctx.device)
        self.loader = build_loader(self.train_set, int(cfg.batch_size), shuffle=True, num_workers=int(cfg.workers),
                                   seed=int(cfg.seed), distributed=self.ctx.distributed, drop_last=True,
                                   pin_memory=self.ctx.device.type == "cuda")
        if len(self.loader) == 0:
            raise ConfigError(f"the train split has {len(self.train_set)} images, fewer than one batch of "
                              f"{cfg.batch_size} per process; lower batch_size")
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, len(self.loader), int(cfg.epochs), cfg.optim)
        self.amp = bool(cfg.amp)
        self.eval_options = inference.InferenceOptions.from_config(cfg.eval, self.amp)
        if self.ctx.main:
            inference.warn_if_flip_untrained(self.eval_options, cfg.data)
        # Loss scaling is for float16 only; CPU autocast uses bfloat16, whose range needs none.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.ctx.device.type == "cuda")
        self.epoch = 0
        self.step = 0
        self.train_seconds = 0.0
        self.writer = None  # TensorBoard, opened by fit once it knows the step it resumes at

    # -- state ------------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "train_seconds": self.train_seconds,
            "rng": checkpoint.rng_state(), "config": OmegaConf.to_container(self.cfg, resolve=True),
            "skeleton": skeleton_state(self.skeleton),
        }

    def resume(self) -> bool:
        """Continue from the run folder's checkpoint, if there is one; returns whether it did.

        Either way the log is cut back to the epochs before the one training starts at (all of it on a fresh start),
        so a run killed at any moment and started again logs each epoch once.
        """
        path = self.run_dir / CHECKPOINT
        resumed = path.exists()
        if resumed:
            self._load(path)
        if self.ctx.main:
            # A checkpoint write stopped by a kill leaves its temporary file; the rename never happened, so the
            # checkpoint itself is the previous complete one.
            remove_partial_writes(path)
            kept = [e for e in read_log(self.run_dir / LOG) if e.get("epoch", 0) < self.epoch]
            write_atomic(self.run_dir / LOG, "".join(json.dumps(e) + "\n" for e in kept))
        return resumed

    def _load(self, path: Path) -> None:
        state = checkpoint.load(path, map_location=self.ctx.device)
        current = OmegaConf.to_container(self.cfg, resolve=True)
        for key in MODEL_KEYS:
            theirs, ours = network_config(state["config"], key), network_config(current, key)
            if theirs != ours:
                raise CheckpointError(f"{path} was trained with a different {key} config than this run ({key} "
                                      f"{theirs.get('name')!r} there, {ours.get('name')!r} here); use a new run "
                                      f"folder (hydra.run.dir=...) or the original {key} settings")
        if state["skeleton"]["keypoints"] != list(self.skeleton.keypoints):
            raise CheckpointError(f"{path} was trained on keypoints {state['skeleton']['keypoints']}, but data "
                                  f"{self.cfg.data.name!r} has {list(self.skeleton.keypoints)}; use a new run folder "
                                  f"(hydra.run.dir=...)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        checkpoint.set_rng_state(state["rng"])
        planned = state["config"].get("epochs")
        if self.ctx.main and planned != int(self.cfg.epochs) and self.cfg.optim.get("schedule") == "cosine":
            # Extending a run is allowed (epochs stays out of the run folder's name), but a cosine schedule is
            # computed from epochs, so the learning rate jumps: say so rather than let it pass for a fresh run.
            print(f"[train] warning: {path} was trained towards epochs={planned}; going on to epochs="
                  f"{self.cfg.epochs} re-stretches the cosine schedule from epoch {self.epoch} on, so this run will "
                  f"not equal a fresh {self.cfg.epochs}-epoch run (use a new run folder, hydra.run.dir=..., for "
                  f"that)", file=sys.stderr, flush=True)

    def _load_pretrained(self, path: Path) -> None:
        """Start the trunk from the weights at ``path`` (``trunk.pretrained``) and say what was loaded."""
        report = load_pretrained(self.model.trunk, path)
        if self.ctx.main:
            print(f"[train] trunk weights from {path}: {report.loaded} tensors loaded, {len(report.missing)} of the "
                  f"trunk's left as initialised, {len(report.unused)} in the file unused", flush=True)

    # -- loop -------------------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``cfg.epochs`` (continuing a previous run in the folder) and return the final metrics."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        if self.ctx.main:
            self._write_status("running")
            where = f"resuming at epoch {self.epoch}" if resumed else "starting"
            device = self.ctx.device
            threads = f" x{torch.get_num_threads()} threads" if device.type == "cpu" else ""
            print(f"[train] {cfg.method.name} on {cfg.trunk.name}, data {cfg.data.name}: {where} on {device.type}"
                  f"{threads}, {precision_description(device, self.amp)}; run folder {self.run_dir}", flush=True)
        if not resumed and cfg.trunk.get(PRETRAINED):
            self._load_pretrained(resolve_path(cfg.trunk[PRETRAINED]))
        self.writer = self._tensorboard(resumed_at=self.step)
        try:
            return self._run_epochs()
        finally:
            if self.writer is not None:
                self.writer.close()
                self.writer = None

    def _write_status(self, status: str) -> None:
        write_json(self.run_dir / STATUS, {"status": status, "epoch": self.epoch})

    def _run_epochs(self) -> dict[str, Any]:
        cfg = self.cfg
        metrics: dict[str, Any] = {}
        while self.epoch < int(cfg.epochs):
            start = time.perf_counter()
            self._train_epoch()
            sync_buffers(self.ctx, self.model)
            self.train_seconds += time.perf_counter() - start
            self.epoch += 1
            last = self.epoch == int(cfg.epochs)
            if last or (cfg.eval_every and self.epoch % int(cfg.eval_every) == 0):
                metrics = self.evaluate()
            if self.ctx.main:
                checkpoint.save(self.run_dir / CHECKPOINT, self.state())
                self._write_status("running")
            barrier(self.ctx)
        if not metrics:
            metrics = self.evaluate()
        if self.ctx.main:
            params = sum(p.numel() for p in self.model.parameters())
            final = {**metrics, "params_M": params / 1e6, "train_minutes": self.train_seconds / 60,
                     "epochs": self.epoch, "steps": self.step}
            write_json(self.run_dir / "metrics.json", final)
            self._write_status("done")
            metrics = final
        return broadcast_object(self.ctx, metrics)

    def _train_epoch(self) -> None:
        cfg = self.cfg
        self.net.train()
        self.loader.set_epoch(self.epoch)
        device = self.ctx.device
        batches = self.loader
        if self.ctx.main:
            from tqdm import tqdm

            batches = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="step", leave=False,
                           mininterval=2.0)
        tick, seen = time.perf_counter(), 0
        for batch in batches:
            images = batch["image"].to(device, non_blocking=True)
            targets = {k: v.to(device, non_blocking=True) for k, v in batch["targets"].items()}
            with mixed_precision(device, self.amp):
                predictions = self.net(images)
            predictions = [{k: v.float() for k, v in p.items()} for p in predictions]
            loss, parts = self.loss_fn(predictions, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step + 1}: "
                                         f"parts {({k: float(v) for k, v in parts.items()})}; lower optim.lr or set "
                                         f"grad_clip")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), float(cfg.grad_clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.step += 1
            seen += images.shape[0] * self.ctx.world_size
            if self.ctx.main and self.step % int(cfg.log_every) == 0:
                elapsed = time.perf_counter() - tick
                entry = {"type": "step", "epoch": self.epoch, "step": self.step, "loss": loss.item(),
                         **{k: float(v) for k, v in parts.items()}, "lr": self.scheduler.get_last_lr()[0],
                         "images_per_s": seen / max(elapsed, 1e-9)}
                self._log(entry)
                if hasattr(batches, "set_postfix"):
                    batches.set_postfix(loss=f"{entry['loss']:.4f}", img_s=f"{entry['images_per_s']:.1f}")
                tick, seen = time.perf_counter(), 0

    def evaluate(self) -> dict[str, Any]:
        """COCO metrics of the current weights on the val split (computed on rank 0, shared with all ranks)."""
        metrics: dict[str, Any] = {}
        if self.ctx.main:
            indices = inference.first_images(self.val_set, self.cfg.eval.max_images)
            result = inference.run(self.model, self.val_set, self.eval_options, self.ctx.device, indices=indices)
            metrics = inference.score(self.val_set, result)
            self._log({"type": "eval", "epoch": self.epoch - 1, "epochs_done": self.epoch, "step": self.step,
                       **{k: v for k, v in metrics.items() if k != "by_people"}, "by_people": metrics["by_people"]})
            print(f"[train] epoch {self.epoch}: val AP {metrics['AP']:.3f} (AP50 {metrics['AP50']:.3f}, "
                  f"{metrics['images']} images)", flush=True)
        # The broadcast is a collective: the other ranks wait in it until rank 0 has evaluated.
        return broadcast_object(self.ctx, metrics)

    # -- logging ----------------------------------------------------------------------------------------------------

    def _log(self, entry: dict[str, Any]) -> None:
        with (self.run_dir / LOG).open("a") as f:
            f.write(json.dumps(entry) + "\n")
        if self.writer is not None:
            for key, value in entry.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{entry['type']}/{key}", value, self.step)

    def _tensorboard(self, resumed_at: int):
        """A TensorBoard writer on the main process when tensorboard is installed. Events logged after step
        ``resumed_at`` (the checkpoint's) by a killed run are dropped, as the JSONL log's are."""
        if not self.ctx.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        purge_step = resumed_at + 1 if resumed_at else None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge_step)
