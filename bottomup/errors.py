"""Errors that carry a message meant for the user: the command-line apps print them without a traceback."""

from __future__ import annotations


class BottomupError(Exception):
    """Base of bottomup's user-facing errors; the message names the file, field or value at fault."""


class DataError(BottomupError, ValueError):
    """A dataset, annotation file or image is missing or malformed."""


class ConfigError(BottomupError, ValueError):
    """A configuration names something unknown or combines incompatible choices."""


class CheckpointError(BottomupError, ValueError):
    """A checkpoint is missing, unreadable or does not match the model."""
