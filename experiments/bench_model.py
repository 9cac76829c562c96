"""Forward and training-step time of every method's model, per image; numbers are printed, never asserted.

    python experiments/bench_model.py [--repeats 3]

CPU (2 threads): the small trunks ``hrnet_w8_small`` and ``hrnet_w16_small`` at 128 and 256 input, batch 8, in
float32 and, on CPUs with native bfloat16 (AVX-512 BF16 or AMX), with bf16 autocast as training uses by default.
CUDA, when available: ``hrnet_w32`` at 512, batch 16, mixed precision (fp16 autocast, gradient scaling).

"forward" is inference (eval mode, no autograd); "train" is forward in train mode + the method's loss against
targets encoded from random synthetic people + backward (no optimiser step). Each figure is the fastest of
``--repeats`` timed batches after one warm-up batch: on a shared machine other work only ever adds time, so the
minimum is the least disturbed estimate (as ``timeit`` advises).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from bottomup.config import build_model, group_options
from bottomup.methods.base import GroupingMethod
from bottomup.model import PoseModel, cpu_bf16_supported, mixed_precision
from bottomup.skeletons import get_skeleton

CPU_TRUNKS = ("hrnet_w8_small", "hrnet_w16_small")
CPU_SIZES = (128, 256)
CPU_BATCH = 8
CPU_THREADS = 2
CUDA_TRUNK, CUDA_SIZE, CUDA_BATCH = "hrnet_w32", 512, 16


def random_targets(method: GroupingMethod, batch: int, size: int, rng: np.random.Generator) -> dict[str, Tensor]:
    """Batched training targets of ``batch`` images, each with 1-5 random people (joints scattered around a centre,
    every fifth one unlabelled)."""
    k = method.skeleton.num_keypoints
    encoded = []
    for _ in range(batch):
        n = int(rng.integers(1, 6))
        centres = rng.uniform(0.2 * size, 0.8 * size, (n, 1, 2))
        xy = centres + rng.normal(0.0, 0.08 * size, (n, k, 2))
        visible = np.where(rng.random((n, k, 1)) < 0.8, 2.0, 0.0)
        encoded.append(method.codec.encode(np.concatenate([xy, visible], axis=2), (size, size)))
    return {name: torch.stack([e[name] for e in encoded]) for name in encoded[0]}


def best_seconds(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Shortest wall time of ``step`` over ``repeats`` calls, after one warm-up call."""
    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    synchronise()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronise()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(trunk: str, method: str, size: int, batch: int, device: torch.device, amp: bool,
          repeats: int) -> tuple[float, float]:
    """Seconds per image of inference and of a training step (forward, loss, backward)."""
    model: PoseModel = build_model(trunk, method, get_skeleton("coco")).to(device)
    loss = model.method.build_loss()
    images = torch.randn(batch, 3, size, size, device=device)
    targets = {k: v.to(device) for k, v in random_targets(model.method, batch, size,
                                                           np.random.default_rng(0)).items()}
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")

    def forward() -> None:
        with torch.inference_mode(), mixed_precision(device, amp):
            model.predict(images)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        with mixed_precision(device, amp):
            predictions = model(images)
        total, _ = loss([{k: v.float() for k, v in p.items()} for p in predictions], targets)
        scaler.scale(total).backward()

    model.eval()
    forward_s = best_seconds(forward, repeats, device)
    model.train()
    train_s = best_seconds(train_step, repeats, device)
    return forward_s / batch, train_s / batch


def report(rows: list[tuple[str, str, int, int, str]], device: torch.device, amp: bool, repeats: int) -> None:
    print(f"{'trunk':<16}{'method':<13}{'input':>6}{'batch':>6}  {'fwd ms/img':>11}{'fwd img/s':>10}"
          f"{'train ms/img':>13}{'train img/s':>12}  device")
    for trunk, method, size, batch, label in rows:
        forward_s, train_s = bench(trunk, method, size, batch, device, amp, repeats)
        print(f"{trunk:<16}{method:<13}{size:>6}{batch:>6}  {1e3 * forward_s:>11.1f}{1 / forward_s:>10.1f}"
              f"{1e3 * train_s:>13.1f}{1 / train_s:>12.1f}  {label}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per figure (the fastest is reported)")
    args = parser.parse_args()
    methods = group_options("method")
    torch.set_num_threads(CPU_THREADS)
    torch.manual_seed(0)
    precisions = [False, True] if cpu_bf16_supported() else [False]
    for amp in precisions:
        label = f"cpu x{CPU_THREADS} threads {'bf16' if amp else 'fp32'}"
        report([(t, m, s, CPU_BATCH, label) for t in CPU_TRUNKS for s in CPU_SIZES for m in methods],
               torch.device("cpu"), amp, args.repeats)
    if torch.cuda.is_available():
        label = f"{torch.cuda.get_device_name()} amp"
        report([(CUDA_TRUNK, m, CUDA_SIZE, CUDA_BATCH, label) for m in methods], torch.device("cuda"), True,
               args.repeats)


if __name__ == "__main__":
    main()
