"""What every command-line app shares: errors as one clear paragraph, threads, atomic result files."""

from __future__ import annotations

import functools
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from bottomup.errors import BottomupError

# Suffix of write_atomic's temporary files, ``.<name>.<random>.tmp`` beside the target.
TEMP_SUFFIX = ".tmp"
# What torch.utils.data puts before a worker's traceback when it raises the worker's error in the main process.
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def debug_enabled(cfg: Any = None) -> bool:
    """Tracebacks are shown with ``debug=true`` on the command line or ``BOTTOMUP_DEBUG=1`` in the environment."""
    # BOTTOMUP_DEBUG=0 reads as off, as a user setting it would expect.
    env = os.environ.get("BOTTOMUP_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return env or bool(getattr(cfg, "debug", False) if cfg is not None else False)


def friendly_errors(main: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap an app's main: bad input (missing files, malformed data, unknown names, a required setting left unset)
    ends the run with the error's message and exit status 2 instead of a traceback, unless debugging is on."""

    @functools.wraps(main)
    def wrapper(cfg: Any) -> Any:
        try:
            return main(cfg)
        except (BottomupError, FileNotFoundError, IsADirectoryError, PermissionError, MissingMandatoryValue) as err:
            if debug_enabled(cfg):
                raise
            print(f"error: {_message(err)}\n(run with debug=true or BOTTOMUP_DEBUG=1 for the traceback)",
                  file=sys.stderr)
            sys.exit(2)

    return wrapper


def _message(err: BaseException) -> str:
    """The one paragraph to print for a user-facing error."""
    if isinstance(err, MissingMandatoryValue):
        # OmegaConf's own text spreads over lines with the node type; a '???' in a config means "give it on the
        # command line".
        return f"{err.full_key} is required: set it on the command line, e.g. {err.full_key}=..."
    text = str(err)
    if _WORKER_TRACEBACK in text:
        # An error in a DataLoader worker (say a corrupt image) is raised again in the main process as the same type
        # whose message is the worker's whole traceback; its last line is "module.Type: the original message".
        return text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (``None`` or 0: leave the default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def decoder_overrides(cfg: Any) -> dict[str, Any]:
    """An app config's ``decoder`` section as a plain dict: the decoder options to change in a checkpoint's method."""
    section = cfg.get("decoder")
    return OmegaConf.to_container(section, resolve=True) if section else {}


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write a file so that readers see the old content or the new, never a half-written one (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}"
    # os.open with mode 0o666 gives the permissions of an ordinarily created file (umask applied); tempfile.mkstemp
    # would leave every result file readable by its owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_partial_writes(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`write_atomic` calls for ``path`` left behind when a SIGKILL stopped
    them before their rename (``path`` itself is untouched); returns what was deleted. Call it only when no other
    process may be writing ``path``."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_atomic(path, json.dumps(obj, indent=2) + "\n")
