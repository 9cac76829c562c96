"""Errors that carry a message meant for the user: the command-line apps print them without a traceback."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


class BottomupError(Exception):
    """Base of bottomup's user-facing errors; the message names the file, field or value at fault."""


class DataError(BottomupError, ValueError):
    """A dataset, annotation file or image is missing or malformed."""


class ConfigError(BottomupError, ValueError):
    """A configuration names something unknown or combines incompatible choices."""


class CheckpointError(BottomupError, ValueError):
    """A checkpoint is missing, unreadable or does not match the model."""


@contextmanager
def config_errors(what: str) -> Iterator[None]:
    """Turn the ``ValueError``/``TypeError`` a constructor raises on bad arguments while objects are built from a
    config (or Hydra's wrapper of one) into a :class:`ConfigError` prefixed with ``what``, e.g. ``"trunk 'hrnet_w32'
    with method 'higherhrnet'"``: the constructors validate their own arguments, and this names the config choices
    those arguments came from, so the apps print it as a one-paragraph error."""
    from hydra.errors import InstantiationException  # lazily: this module is imported everywhere, Hydra is heavy

    try:
        yield
    except BottomupError:
        raise
    except (ValueError, TypeError, InstantiationException) as err:
        # Hydra wraps the constructor's exception in a multi-line message; the cause alone is the useful part.
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ is not None else err
        raise ConfigError(f"{what}: {cause}") from err


def model_choice(trunk: Any, method: Any) -> str:
    """``"trunk 'hrnet_w32' with method 'ae'"`` from the trunk and method configs (mappings with a ``name``, or
    names): the two choices that make a model, for error messages."""
    names = [c if isinstance(c, str) else c.get("name") for c in (trunk, method)]
    return f"trunk {names[0]!r} with method {names[1]!r}"
