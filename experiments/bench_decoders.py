"""Decoder speed on ideal maps of real COCO annotations: median ms per image, per method and crowd size.

    python experiments/bench_decoders.py [--annotations PATH] [--input-size 512] [--batch 32] [--repeats 3]

For every method: median wall time of one decode call per image with 1 torch thread and with the default thread
count, the median by people per image (1, 2-3, 4-7, 8+, one thread), and the cost per image of batched calls.
With a CUDA device, the batched GPU cost too. Maps are rendered once, outside the timed region.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from bottomup.config import build_method
from bottomup.evaluation.coco_eval import bucket_of, load_annotations
from bottomup.evaluation.oracle import ideal_image_outputs, image_people
from bottomup.evaluation.report import format_table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ANNOTATIONS = ROOT.parent / "shared/data/coco-val-subset/person_keypoints_val2017_dev.json"
METHODS = ("openpose", "ae", "higherhrnet", "spm")


def render(codec, annotations, input_size: int) -> list[tuple[int, dict]]:
    """(people count, batched ideal outputs) for every image with people."""
    coco = annotations.coco
    items = []
    for image_id in sorted(coco.getImgIds()):
        people = image_people(coco, image_id)
        if not len(people):
            continue
        info = coco.loadImgs([image_id])[0]
        batch, _ = ideal_image_outputs(codec, people, (info["width"], info["height"]), input_size)
        items.append((len(people), batch))
    return items


def per_image_ms(codec, items, repeats: int) -> list[float]:
    """Median over ``repeats`` of each image's decode time, in ms (after a warm-up pass)."""
    for _, batch in items[:10]:
        codec.decode(batch)
    times = []
    for _, batch in items:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            codec.decode(batch)
            runs.append(time.perf_counter() - start)
        times.append(1000 * statistics.median(runs))
    return times


def batched_ms(codec, items, batch_size: int, device: str) -> float:
    """Cost per image of decoding ``batch_size`` images in one call."""
    names = list(items[0][1])
    batches = [{n: torch.cat([b[n] for _, b in items[i:i + batch_size]]).to(device) for n in names}
               for i in range(0, len(items) - batch_size + 1, batch_size)]
    codec.decode(batches[0])
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        codec.decode(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / (len(batches) * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", default=str(DEFAULT_ANNOTATIONS))
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    annotations = load_annotations(args.annotations)
    default_threads = torch.get_num_threads()
    rows, crowd_rows = {}, {}
    for name in args.methods:
        codec = build_method(name, annotations.skeleton).codec
        items = render(codec, annotations, args.input_size)
        torch.set_num_threads(1)
        one = per_image_ms(codec, items, args.repeats)
        batched_one = batched_ms(codec, items, args.batch, "cpu")
        torch.set_num_threads(default_threads)
        default = per_image_ms(codec, items, args.repeats)
        rows[name] = {"ms 1 thread": statistics.median(one), f"ms {default_threads} threads": statistics.median(default),
                      f"ms/img batch {args.batch}, 1 thread": batched_one, "images": len(items)}
        if torch.cuda.is_available():
            rows[name][f"ms/img batch {args.batch}, cuda"] = batched_ms(codec, items, args.batch, "cuda")
        by_bucket: dict[str, list[float]] = {}
        for (count, _), ms in zip(items, one):
            by_bucket.setdefault(bucket_of(count), []).append(ms)
        crowd_rows[name] = {f"{b} ({len(v)} img)": statistics.median(v) for b, v in by_bucket.items()}
    print(f"Decode time per image on ideal maps of {Path(args.annotations).name}, input {args.input_size} "
          f"(maps at stride 4; HigherHRNet also 2), median over images of the median of {args.repeats} runs\n")
    print(format_table(rows, list(next(iter(rows.values())))))
    print("\nms per image by people per image (1 thread)\n")
    columns = sorted({c for r in crowd_rows.values() for c in r}, key=lambda c: int(c.split("-")[0].split("+")[0].split(" ")[0]))
    print(format_table(crowd_rows, columns))


if __name__ == "__main__":
    main()
