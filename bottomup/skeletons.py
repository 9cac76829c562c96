"""Keypoint skeletons: names, limbs, flip pairs and OKS sigmas.

A :class:`Skeleton` is the single description of a keypoint layout that every other part of bottomup reads; nothing
else hard-codes the number of keypoints. Two layouts are built in (:data:`COCO`, :data:`CROWDPOSE`) and any
COCO-format dataset gives its own through :meth:`Skeleton.from_coco_category`.

The limb graph that a part-affinity-field method follows is a choice of its own (``paf_limbs``), separate from the
drawing skeleton (``limbs``): on real COCO annotations a missing elbow cuts the wrist off from the 19 drawing links, so
the COCO skeleton ships a redundant 33-link graph (:data:`COCO_REDUNDANT_LIMBS`) as its PAF default.

Imports only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

Limb = tuple[int, int]

# OKS sigmas by keypoint name, from the COCO keypoint evaluation and the CrowdPose API (head and neck).
_KNOWN_SIGMAS: dict[str, float] = {
    "nose": 0.026,
    "left_eye": 0.025,
    "right_eye": 0.025,
    "left_ear": 0.035,
    "right_ear": 0.035,
    "left_shoulder": 0.079,
    "right_shoulder": 0.079,
    "left_elbow": 0.072,
    "right_elbow": 0.072,
    "left_wrist": 0.062,
    "right_wrist": 0.062,
    "left_hip": 0.107,
    "right_hip": 0.107,
    "left_knee": 0.087,
    "right_knee": 0.087,
    "left_ankle": 0.089,
    "right_ankle": 0.089,
    "head": 0.079,
    "neck": 0.079,
}
# Sigma for keypoints of custom datasets whose names are not in the table above: the mean COCO body sigma.
DEFAULT_SIGMA = 0.072

_SIDE_PREFIXES = (("left_", "right_"), ("l_", "r_"), ("left", "right"))


@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout.

    Attributes:
        name: a short identifier, e.g. ``"coco"``.
        keypoints: keypoint names, in channel order.
        limbs: drawing links as pairs of keypoint indices (0-based).
        flip_pairs: pairs of keypoint indices that swap under a horizontal flip (left/right).
        sigmas: per-keypoint OKS sigmas (COCO convention: fraction of the object scale).
        paf_limbs: the default limb graph for part affinity fields; ``None`` means ``limbs``.
    """

    name: str
    keypoints: tuple[str, ...]
    limbs: tuple[Limb, ...]
    flip_pairs: tuple[Limb, ...] = ()
    sigmas: tuple[float, ...] = field(default=())
    paf_limbs: tuple[Limb, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keypoints", tuple(str(k) for k in self.keypoints))
        object.__setattr__(self, "limbs", _as_pairs(self.limbs))
        object.__setattr__(self, "flip_pairs", _as_pairs(self.flip_pairs))
        if self.paf_limbs is not None:
            object.__setattr__(self, "paf_limbs", _as_pairs(self.paf_limbs))
        if not self.sigmas:
            object.__setattr__(self, "sigmas", tuple(_KNOWN_SIGMAS.get(k, DEFAULT_SIGMA) for k in self.keypoints))
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        self._validate()

    def _validate(self) -> None:
        k = len(self.keypoints)
        where = f"skeleton {self.name!r}"
        if k == 0:
            raise ValueError(f"{where}: 'keypoints' is empty")
        if len(set(self.keypoints)) != k:
            dupes = sorted({n for n in self.keypoints if self.keypoints.count(n) > 1})
            raise ValueError(f"{where}: duplicate keypoint names {dupes}")
        if len(self.sigmas) != k:
            raise ValueError(f"{where}: 'sigmas' has {len(self.sigmas)} values for {k} keypoints")
        if any(not s > 0 for s in self.sigmas):
            raise ValueError(f"{where}: 'sigmas' must be positive, got {self.sigmas}")
        for field_name in ("limbs", "flip_pairs", "paf_limbs"):
            pairs = getattr(self, field_name) or ()
            for a, b in pairs:
                if not (0 <= a < k and 0 <= b < k):
                    raise ValueError(f"{where}: '{field_name}' has pair ({a}, {b}) outside 0..{k - 1}")
                if a == b:
                    raise ValueError(f"{where}: '{field_name}' links keypoint {a} to itself")
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            if a in seen or b in seen:
                raise ValueError(f"{where}: keypoint {a if a in seen else b} appears in two 'flip_pairs'")
            seen.update((a, b))

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def pafs(self) -> tuple[Limb, ...]:
        """The limb graph a PAF method uses by default."""
        return self.paf_limbs if self.paf_limbs is not None else self.limbs

    @property
    def flip_index(self) -> tuple[int, ...]:
        """Permutation ``p`` with ``flipped[k] = original[p[k]]`` for keypoint channels after a horizontal flip."""
        index = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return tuple(index)

    def index(self, name: str) -> int:
        """Channel index of a keypoint by name."""
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"skeleton {self.name!r} has no keypoint {name!r}; it has {list(self.keypoints)}") from None

    @classmethod
    def from_coco_category(cls, category: Mapping[str, Any], sigmas: Sequence[float] | None = None,
                           name: str | None = None) -> "Skeleton":
        """Build the skeleton described by a COCO ``categories`` entry.

        ``category["keypoints"]`` gives the names and ``category["skeleton"]`` the 1-based limb pairs. Flip pairs are
        found from ``left_*``/``right_*`` (or ``l_*``/``r_*``) names; OKS sigmas come from ``sigmas`` or, by name,
        from the COCO/CrowdPose tables (others get :data:`DEFAULT_SIGMA`). A category matching a built-in layout
        returns that layout (with its PAF graph).
        """
        if "keypoints" not in category:
            raise ValueError(f"COCO category {category.get('name', '?')!r} has no 'keypoints' field")
        names = tuple(str(n) for n in category["keypoints"])
        raw_limbs = category.get("skeleton") or []
        try:
            limbs = tuple((int(a) - 1, int(b) - 1) for a, b in raw_limbs)
        except (TypeError, ValueError):
            raise ValueError(f"COCO category field 'skeleton' must be a list of 1-based index pairs, "
                             f"got {raw_limbs!r}") from None
        for builtin in (COCO, CROWDPOSE):
            if names == builtin.keypoints and sigmas is None:
                return builtin
        return cls(name=name or str(category.get("name", "custom")), keypoints=names, limbs=limbs,
                   flip_pairs=_flip_pairs_from_names(names), sigmas=tuple(sigmas) if sigmas is not None else ())


def _as_pairs(pairs: Sequence[Sequence[int]]) -> tuple[Limb, ...]:
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"expected pairs of keypoint indices, got {pair!r}")
        out.append((int(pair[0]), int(pair[1])))
    return tuple(out)


def _flip_pairs_from_names(names: Sequence[str]) -> tuple[Limb, ...]:
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        for left, right in _SIDE_PREFIXES:
            if n.startswith(left) and right + n[len(left):] in index:
                pairs.append((i, index[right + n[len(left):]]))
                break
    return tuple(pairs)


COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# The 19 links of the COCO annotation file's category, 0-based.
COCO_LIMBS: tuple[Limb, ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# COCO links plus 14 redundant ones, so that people with a missing joint (an elbow, a knee, a shoulder) stay one
# connected graph: shoulder-wrist, hip-ankle, nose-shoulder, crossed shoulder-hip, ear-ear, knee-knee, elbow-hip,
# wrist-hip.
COCO_REDUNDANT_LIMBS: tuple[Limb, ...] = COCO_LIMBS + (
    (5, 9), (6, 10),
    (11, 15), (12, 16),
    (0, 5), (0, 6),
    (5, 12), (6, 11),
    (3, 4),
    (13, 14),
    (7, 11), (8, 12),
    (9, 11), (10, 12),
)

COCO = Skeleton(
    name="coco",
    keypoints=COCO_KEYPOINTS,
    limbs=COCO_LIMBS,
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    paf_limbs=COCO_REDUNDANT_LIMBS,
)

CROWDPOSE = Skeleton(
    name="crowdpose",
    keypoints=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
    ),
    limbs=(
        (12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7),
        (6, 8), (8, 10), (7, 9), (9, 11),
    ),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
)

BUILTIN: dict[str, Skeleton] = {"coco": COCO, "crowdpose": CROWDPOSE}


def get_skeleton(name: str) -> Skeleton:
    """A built-in skeleton by name (``coco``, ``crowdpose``)."""
    try:
        return BUILTIN[name]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; built-in skeletons are {sorted(BUILTIN)}") from None
