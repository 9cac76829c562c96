"""How often a PAF limb graph cuts a real person into pieces: the people a PAF decoder cannot assemble whole.

    python experiments/paf_fragmentation.py [--annotations PATH]

A person's labelled joints form one piece only when some chain of limbs between labelled joints links them all; an
unlabelled (or undetected) joint in the middle of a chain splits the person, however good the maps are. Prints the
fraction of labelled people split under COCO's 19 drawing links and under the redundant 33-link PAF graph
(:func:`bottomup.methods.openpose.limb_fragmentation`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bottomup.evaluation.coco_eval import load_annotations
from bottomup.evaluation.oracle import image_people
from bottomup.methods.openpose import limb_fragmentation

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ANNOTATIONS = ROOT.parent / "shared/data/coco-val-subset/person_keypoints_val2017_dev.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", default=str(DEFAULT_ANNOTATIONS))
    args = parser.parse_args()
    annotations = load_annotations(args.annotations)
    people = [image_people(annotations.coco, image_id) for image_id in annotations.coco.getImgIds()]
    keypoints = np.concatenate([p for p in people if len(p)])
    skeleton = annotations.skeleton
    print(f"{len(keypoints)} labelled people in {Path(args.annotations).name}")
    for name, limbs in (("drawing links", skeleton.limbs), ("PAF graph", skeleton.pafs)):
        print(f"  {name} ({len(limbs)} limbs): {100 * limb_fragmentation(keypoints, limbs):.1f} % of people split")


if __name__ == "__main__":
    main()
