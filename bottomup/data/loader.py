"""Data loaders whose batches depend only on (seed, epoch), in one process or under DistributedDataParallel.

Shuffling always goes through a :class:`~torch.utils.data.distributed.DistributedSampler` (one replica when not
distributed), whose order is a function of ``(seed, epoch)``; augmentation draws come from the dataset's own
``(seed, epoch, index)`` generator (:meth:`bottomup.data.coco.CocoKeypoints.rng`). So the worker count, the worker
that builds a sample and the process rank never change what a sample is.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bottomup.errors import ConfigError


def _init_worker(worker_id: int) -> None:
    """One torch thread per worker: the workers already use every core between them.

    OpenCV's thread count is left alone: after a fork, ``cv2.setNumThreads`` blocks on the pool the parent created.
    """
    torch.set_num_threads(1)
    # Seed the global generators from the per-worker torch seed, for any library that draws from them.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochLoader(DataLoader):
    """A :class:`DataLoader` with :meth:`set_epoch`, which reshuffles and re-draws the augmentation."""

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``: the sampler's order and, if the dataset has ``set_epoch``, its augmentation.

        Workers are not persistent, so each epoch's workers start from the dataset as set here.
        """
        self.epoch = int(epoch)
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(self.epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0, seed: int = 0,
                 distributed: bool = False, epoch: int = 0, drop_last: bool = False,
                 pin_memory: bool = False) -> EpochLoader:
    """A deterministic loader over ``dataset``, positioned at ``epoch``.

    Args:
        dataset: a map-style dataset; ``set_epoch`` on it is called when the loader's epoch changes.
        batch_size: samples per batch (per process when distributed).
        shuffle: shuffle with the ``(seed, epoch)`` order.
        num_workers: loader processes; each runs with one torch thread (OpenCV keeps its own count, see
            ``_init_worker``).
        seed: seeds the order and the loader's worker seeds.
        distributed: split the data across the ranks of the initialised ``torch.distributed`` group. As with any
            :class:`DistributedSampler`, the last samples are repeated to give every rank the same count.
        epoch: the epoch to start at (call :meth:`EpochLoader.set_epoch` before each later epoch).
        drop_last: drop the last incomplete batch (training).
        pin_memory: page-locked batches for faster host-to-GPU copies.
    Raises:
        ConfigError: ``distributed`` is asked for but ``torch.distributed`` is not initialised.
    """
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("build_loader(distributed=True) needs an initialised torch.distributed process group "
                              "(torch.distributed.init_process_group); launch with torchrun or set distributed=False.")
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
    loader = EpochLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                         worker_init_fn=_init_worker if num_workers > 0 else None,
                         generator=torch.Generator().manual_seed(seed), drop_last=drop_last, pin_memory=pin_memory,
                         persistent_workers=False)
    loader.set_epoch(epoch)
    return loader
