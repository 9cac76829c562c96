"""``python -m bottomup.predict checkpoint=PATH images=PATH_OR_DIR``: draw the poses a model finds.

Writes one PNG per image with every person's skeleton in its own colour, and ``poses.json``: per image, each person's
keypoints ``[[x, y, score], ...]`` in image pixels and its score.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from bottomup import geometry
from bottomup.cli import decoder_overrides, friendly_errors, set_threads, write_json
from bottomup.config import resolve_path
from bottomup.data import EvalTransform, normalize, read_image
from bottomup.errors import DataError
from bottomup.evaluation import inference
from bottomup.training.distributed import setup
from bottomup.training.trainer import load_model
from bottomup.visualize import draw_poses, save_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def image_files(path: Path) -> list[Path]:
    """The image at ``path`` or the images in the folder ``path`` (sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    raise DataError(f"images={path}: no such file or folder")


@hydra.main(config_path="../conf", config_name="predict", version_base=None)
@friendly_errors
def main(cfg: DictConfig) -> None:
    set_threads(cfg.threads)
    ctx = setup(str(cfg.device))
    path = resolve_path(cfg.checkpoint)
    model, state = load_model(path, ctx.device, decoder_overrides(cfg))
    skeleton = model.codec.skeleton
    # By default the network sees images at the size it was trained at, as evaluation does.
    input_size = state["config"]["data"]["input_size"] if cfg.input_size is None else cfg.input_size
    transform = EvalTransform(int(input_size))
    print(f"images fitted into the network input of {int(input_size)} px", flush=True)
    options = inference.InferenceOptions(flip=bool(cfg.flip))
    inference.warn_if_flip_untrained(options, state["config"]["data"])
    out_dir = Path(resolve_path(cfg.output_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    found = {}
    for path in image_files(resolve_path(cfg.images)):
        image = read_image(path)
        warped = transform(image, np.zeros((0, skeleton.num_keypoints, 3)), np.ones(image.shape[:2], np.uint8))
        with torch.inference_mode():
            outputs = inference.forward(model, normalize(warped.image)[None].to(ctx.device), options)
            poses = model.codec.decode(outputs)[0].to("cpu")
        poses = poses.affine(torch.as_tensor(geometry.invert(warped.matrix)[:2]))
        poses = poses[poses.scores >= float(cfg.min_score)]
        save_rgb(str(out_dir / f"{path.stem}.png"), draw_poses(image, poses, skeleton, float(cfg.min_keypoint_score)))
        found[path.name] = [{"keypoints": p.tolist(), "score": float(s)}
                            for p, s in zip(poses.keypoints, poses.scores)]
        print(f"{path.name}: {len(poses)} people", flush=True)
    write_json(out_dir / "poses.json", {"skeleton": list(skeleton.keypoints), "images": found})
    print(f"wrote {len(found)} images and poses.json to {out_dir}")


if __name__ == "__main__":
    main()
