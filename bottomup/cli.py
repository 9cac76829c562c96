"""What every command-line app shares: errors as one clear paragraph, threads, atomic result files."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from bottomup.errors import BottomupError


def debug_enabled(cfg: Any = None) -> bool:
    """Tracebacks are shown with ``debug=true`` on the command line or ``BOTTOMUP_DEBUG=1`` in the environment."""
    return bool(os.environ.get("BOTTOMUP_DEBUG")) or bool(getattr(cfg, "debug", False) if cfg is not None else False)


def friendly_errors(main: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap an app's main: bad input (missing files, malformed data, unknown names) ends the run with the error's
    message and exit status 2 instead of a traceback, unless debugging is on."""

    @functools.wraps(main)
    def wrapper(cfg: Any) -> Any:
        try:
            return main(cfg)
        except (BottomupError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
            if debug_enabled(cfg):
                raise
            print(f"error: {err}\n(run with debug=true or BOTTOMUP_DEBUG=1 for the traceback)", file=sys.stderr)
            sys.exit(2)

    return wrapper


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (``None`` or 0: leave the default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write a file so that readers see the old content or the new, never a half-written one (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_atomic(path, json.dumps(obj, indent=2) + "\n")
