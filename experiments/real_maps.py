"""Decode a public pretrained OpenPose network's real outputs with our PAF decoder and score them with COCOeval.

    python experiments/real_maps.py [--maps DIR] [--annotations FILE] [--repeats 3] [--no-ablations]

The maps (``../shared/data/tfpose-maps/<split>``, see its README) are tf-pose-estimation's mobilenet_thin outputs on
coco-mini images: CMU-18 heatmaps (+ background) and 38 field channels at stride 8 of a plain 432x368 resize. Each
file is decoded through :data:`bottomup.decoders.layout.TFPOSE_MOBILENET`, mapped back to the original image,
converted to COCO-17 by keypoint name and scored against the matching coco-mini annotation file. Prints AP, AP50,
AP75, APM, APL, AR and the median decode time per image on one thread, for the default options and each ablation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bottomup import geometry
from bottomup.decoders.layout import CMU18, TFPOSE_MOBILENET, convert
from bottomup.evaluation.coco_eval import evaluate, load_annotations, poses_to_results
from bottomup.evaluation.report import METRICS, format_table
from bottomup.methods.targets import map_to_input_matrix
from bottomup.skeletons import COCO

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

# Each ablation changes one decoder option from its default (or upsamples the maps before decoding).
ABLATIONS: dict[str, dict] = {
    "refine=quarter": {"refine": "quarter"},
    "refine=none": {"refine": "none"},
    "nms_kernel=5": {"nms_kernel": 5},
    "detection_threshold=0.05": {"detection_threshold": 0.05},
    "detection_threshold=0.2": {"detection_threshold": 0.2},
    "samples=5": {"samples": 5},
    "samples=20": {"samples": 20},
    "min_agreement=0.6": {"min_agreement": 0.6},
    "min_agreement=0.95": {"min_agreement": 0.95},
    "share_joints=false": {"share_joints": False},
    "person_score=joints": {"person_score": "joints"},
    "min_keypoints=4 (tf-pose)": {"min_keypoints": 4},
    "pose_nms_threshold=0.9": {"pose_nms_threshold": 0.9},
    "upsample x4 (tf-pose)": {"upsample": 4},
}


def load(path: Path) -> dict:
    """One map file, its float16 maps as float32 ``[1, C, H, W]`` tensors (converted once, not per configuration)."""
    with np.load(path) as f:
        maps = {k: f[k] for k in f.files}
    for name in ("heatmaps", "pafs"):
        maps[name] = torch.from_numpy(maps[name].astype(np.float32))[None]
    return maps


def to_image_matrix(maps: dict) -> np.ndarray:
    """Map grid -> original image pixels: undo the stride, then the plain (aspect-changing) resize."""
    resize = geometry.scaling(float(maps["orig_width"]) / float(maps["net_width"]),
                              float(maps["orig_height"]) / float(maps["net_height"]))
    return resize @ map_to_input_matrix(int(maps["stride"]))


def run(files: list[dict], annotations, options: dict, repeats: int) -> dict:
    """Metrics and median decode ms/image of one decoder configuration over all map files."""
    options = dict(options)
    upsample = int(options.pop("upsample", 1))
    decoder = TFPOSE_MOBILENET.decoder(**options)
    results, times, ids = [], [], []
    for maps in files:
        heat, pafs = maps["heatmaps"], maps["pafs"]
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            h, p = heat, pafs
            if upsample > 1:
                h = F.interpolate(h, scale_factor=upsample, mode="bicubic", align_corners=False)
                p = F.interpolate(p, scale_factor=upsample, mode="bicubic", align_corners=False)
            poses = TFPOSE_MOBILENET.decode(decoder, h, p)[0]
            runs.append(time.perf_counter() - start)
        times.append(statistics.median(runs))
        to_image = to_image_matrix(maps) @ geometry.scaling(1.0 / upsample)
        poses = convert(poses, CMU18, COCO).affine(torch.as_tensor(to_image[:2]))
        image_id = int(maps["image_id"])
        ids.append(image_id)
        results += poses_to_results(image_id, poses, annotations.file.category["id"])
    metrics = evaluate(annotations.coco, results, COCO.sigmas, ids)
    return {**{k: metrics[k] for k in METRICS},
            "ms/image": 1000 * statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", default=str(SHARED / "tfpose-maps" / "train2017"))
    parser.add_argument("--annotations", default=None,
                        help="COCO keypoint file of the maps' images (default: coco-mini's file for the maps' split)")
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes per image (median)")
    parser.add_argument("--no-ablations", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    maps_dir = Path(args.maps)
    annotations = Path(args.annotations) if args.annotations else (
        SHARED / "coco-mini" / "annotations" / f"person_keypoints_{maps_dir.name}.json")
    files = [load(p) for p in sorted(maps_dir.glob("*.npz"))]
    if not files:
        raise SystemExit(f"no .npz map files in {maps_dir}")
    coco = load_annotations(annotations)
    rows = {"default": run(files, coco, {}, args.repeats)}
    if not args.no_ablations:
        for name, options in ABLATIONS.items():
            rows[name] = run(files, coco, options, args.repeats)
    print(f"{len(files)} map files from {maps_dir}, scored against {annotations.name}; one thread\n")
    print(format_table(rows, (*METRICS, "ms/image"), first="decoder options"))


if __name__ == "__main__":
    main()
