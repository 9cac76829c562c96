"""Overfit check on real images: train a small model on coco-mini train2017, evaluate on those same images.

    python experiments/overfit_coco_mini.py [--method spm] [--trunk hrnet_w16_small] [--epochs 60] [--out DIR]

A model that memorises 80 real COCO images must score a high keypoint AP on them; if it does not, the data loading,
the target encoding, the loss, the decoder or the evaluation disagree somewhere (a flipped axis, an off-by-half-pixel
transform, a wrong channel order). Augmentation is switched off so that the network sees exactly the images it is
scored on. Runs ``bottomup.train`` then ``bottomup.evaluate split=train`` as a user would, and prints the AP table,
the wall time of each step, the training loss, and the AP with each half of the outputs (detection, grouping)
replaced by ideal maps, which says which half falls short. Re-running with the same arguments resumes the training run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_AUGMENTATION = ["data.augment.rotation=0", "data.augment.scale=[1.0,1.0]", "data.augment.translate=0",
                   "data.augment.flip=0"]


def run(args: list[str]) -> float:
    """Run a bottomup app in a subprocess from the repository root; return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="spm", help="conf/method name")
    parser.add_argument("--trunk", default="hrnet_w16_small", help="conf/trunk name")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "overfit_coco_mini")
    parser.add_argument("overrides", nargs="*", help="further key=value overrides for bottomup.train")
    args = parser.parse_args()

    run_dir = (args.out / f"{args.method}-{args.trunk}").resolve()
    train_seconds = run(["bottomup.train", "data=coco_mini", f"method={args.method}", f"trunk={args.trunk}",
                         f"epochs={args.epochs}", "batch_size=8", f"data.input_size={args.input_size}",
                         f"optim.lr={args.lr}", "optim.warmup_steps=50", "optim.schedule=cosine", "eval_every=0",
                         "eval.max_images=1", *NO_AUGMENTATION, *args.overrides, f"hydra.run.dir={run_dir}"])
    cells, eval_seconds = {}, {}
    for oracle in ("none", "heatmaps", "grouping"):
        eval_dir = run_dir / ("eval_on_train" if oracle == "none" else f"eval_on_train_oracle_{oracle}")
        eval_seconds[oracle] = run(["bottomup.evaluate", f"checkpoint={run_dir / 'checkpoint.pt'}", "split=train",
                                    f"oracle={oracle}", f"output_dir={eval_dir}", f"hydra.run.dir={eval_dir}"])
        cells[oracle] = json.loads((eval_dir / "metrics.json").read_text())
    metrics = cells["none"]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if s.get("type") == "step"]
    print(f"\noverfit {args.method} / {args.trunk}, {args.epochs} epochs at input {args.input_size} on coco-mini "
          f"train2017 ({metrics.get('images')} images), evaluated on the same images:")
    print("  " + "  ".join(f"{k} {metrics[k]:.3f}" for k in ("AP", "AP50", "AP75", "APM", "APL", "AR")))
    print(f"  training loss {losses[0]:.4f} -> {losses[-1]:.4f}; train {train_seconds / 60:.1f} min, "
          f"evaluate {eval_seconds['none']:.0f} s")
    # Which half of the outputs falls short when the AP is low: each oracle swaps one half for ideal maps.
    print(f"  AP with ideal detection maps {cells['heatmaps']['AP']:.3f}, with ideal grouping maps "
          f"{cells['grouping']['AP']:.3f}")


if __name__ == "__main__":
    main()
