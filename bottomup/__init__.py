"""bottomup: bottom-up multi-person 2D pose estimation with pluggable grouping strategies.

The light, importable parts are :mod:`bottomup.skeletons`, :mod:`bottomup.poses` and :mod:`bottomup.decoders`
(torch, numpy and scipy only). Training, data and evaluation live in their own subpackages.
"""

__version__ = "0.1.0"
