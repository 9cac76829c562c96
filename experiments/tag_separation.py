"""Why an AE or HigherHRNet model groups badly: how far its tags are from telling people apart, and which people.

    python experiments/tag_separation.py CHECKPOINT [--split val] [--max-images N] [--threads T]

Reads the trained model's tags at every labelled joint of the split's images (no augmentation, the data the
checkpoint was trained on) and prints, over the joints of images with two or more people
(:func:`bottomup.evaluation.tag_separation.tag_separation`): the share of joints whose tag is nearer another
person's mean tag than their own (grouping by tag gives those away however good the heatmaps are), the distances to
the own and to the nearest other mean tag, and for the confused joints how far apart the two people's centres are in
units of the own person's size (under 0.5: the people overlap).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bottomup.data.build import build_dataset
from bottomup.evaluation.tag_separation import TagSeparation, tag_separation
from bottomup.geometry import CLOSE_NEIGHBOUR_GAP
from bottomup.methods.ae import AECodec
from bottomup.training.trainer import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint.pt of an ae or higherhrnet run")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, state = load_model(args.checkpoint, torch.device("cpu"))
    codec = model.method.codec
    if not isinstance(codec, AECodec):
        parser.error(f"{args.checkpoint} is a {model.method.name!r} model; tag separation needs tags (ae, higherhrnet)")
    dataset = build_dataset(state["config"]["data"], args.split, codec=codec, train=False)
    count = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    parts = []
    with torch.inference_mode():
        for start in range(0, count, args.batch_size):
            samples = [dataset[i] for i in range(start, min(start + args.batch_size, count))]
            outputs = model.predict(torch.stack([s["image"] for s in samples]))
            joints = torch.stack([s["targets"]["joints"] for s in samples])
            parts.append(tag_separation(codec.joint_tags(outputs["tags"]), joints))
    result = TagSeparation.concatenate(parts)
    if len(result.own) == 0:
        print(f"no labelled joints in images with two or more people among the first {count} {args.split} images")
        return
    confused = result.confused
    print(f"{args.checkpoint}: {count} {args.split} images, {len(result.own)} labelled joints in images with two or "
          f"more people")
    print(f"  joints nearer another person's mean tag than their own: {100 * confused.mean():.1f} %")
    print(f"  distance to own mean tag: median {np.median(result.own):.3f}, 90th percentile "
          f"{np.quantile(result.own, 0.9):.3f}")
    print(f"  distance to nearest other mean tag: median {np.median(result.other):.3f}, 10th percentile "
          f"{np.quantile(result.other, 0.1):.3f}")
    if confused.any():
        gap = result.centre_gap[confused]
        q10, q50, q90 = np.quantile(gap, [0.1, 0.5, 0.9])
        print(f"  confused joints, centre distance of the two people / own person's size: 10/50/90th percentiles "
              f"{q10:.2f} / {q50:.2f} / {q90:.2f}; under 0.5 (overlapping): {100 * (gap < 0.5).mean():.1f} %")
    print("  confused share by distance to the nearest other person's centre / own size:")
    edges = (0.0, CLOSE_NEIGHBOUR_GAP, 0.5, 1.0, np.inf)
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (result.neighbour_gap >= low) & (result.neighbour_gap < high)
        share = f"{100 * confused[inside].mean():5.1f} %" if inside.any() else "    -"
        print(f"    [{low:.2f}, {high:.2f}): {share} of {inside.sum()} joints")


if __name__ == "__main__":
    main()
