"""Batched torch decoders for bottom-up pose estimation: head outputs in, people out, on any device.

    from bottomup.decoders import PAFDecoder, AEDecoder, HigherHRNetDecoder, SPMDecoder

Each decoder is built from a :class:`~bottomup.skeletons.Skeleton` plus its options and called on a batch of maps;
it returns one :class:`~bottomup.poses.Poses` per image with ``keypoints [P, K, 3]`` (x, y in the pixel grid of its
first argument, pixel centres at integers; score) and ``scores [P]``. This package imports only torch, numpy and
scipy: no Hydra, OpenCV or training code.
"""

from bottomup.decoders.ae import AEDecoder
from bottomup.decoders.higherhrnet import HigherHRNetDecoder
from bottomup.decoders.paf import PAFDecoder
from bottomup.decoders.spm import SPMDecoder
from bottomup.poses import Poses

__all__ = ["AEDecoder", "HigherHRNetDecoder", "PAFDecoder", "SPMDecoder", "Poses"]
