"""Configuration: where ``conf/`` lives, composing it outside a Hydra app, and building objects from it."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from bottomup.errors import ConfigError
from bottomup.skeletons import Skeleton

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
# The trunk config key naming weights to start training from (read by the trainer, not by the trunk's constructor).
PRETRAINED = "pretrained"

# ``${repo:path}`` in a config is ``path`` taken from the repository root, so config defaults (the cache, the shared
# data) hold wherever a command is launched; paths typed by the user are relative to where they are.
if not OmegaConf.has_resolver("repo"):
    OmegaConf.register_new_resolver("repo", lambda path="": str(REPO_ROOT / path))


def run_name(overrides: Sequence[str], excluded: Sequence[str]) -> str:
    """The folder name of a run: its command-line ``overrides`` (``key=value``), sorted and joined by commas.

    Left out are the keys matching a pattern of ``excluded`` (``fnmatch``: ``*`` matches any text, dots included, so
    ``method.decoder.*`` covers every decoder option), so that options which do not change what a run learns can
    change without starting a new run; ``/`` in values becomes ``_``, so a path never nests folders. Hydra's own
    ``override_dirname`` matches whole keys only and keeps the slashes.
    """
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in excluded):
            kept.append(override.replace("/", "_"))
    return ",".join(sorted(kept))


# ``${run_name:${hydra:overrides.task},[pattern, ...]}`` names run folders (conf/train.yaml, conf/compare.yaml).
if not OmegaConf.has_resolver("run_name"):
    OmegaConf.register_new_resolver("run_name", run_name)


def resolve_path(path: str | os.PathLike) -> Path:
    """A path from a config or the command line: ``~`` expanded, relative paths from the working directory."""
    return Path(os.path.expanduser(str(path))).resolve()


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line style ``overrides`` (for notebooks and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def group_options(group: str) -> list[str]:
    """Names of the configs available in a ``conf/`` group, e.g. ``group_options("method")``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def load_group(group: str, name: str) -> DictConfig:
    """One config of a group (``conf/<group>/<name>.yaml``) on its own."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown {group} {name!r}; choose one of {group_options(group)}")
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg


def build_method(method_cfg: DictConfig | str, skeleton: Skeleton):
    """Instantiate a grouping method from its config (or from its name in ``conf/method``)."""
    from hydra.utils import instantiate

    cfg = load_group("method", method_cfg) if isinstance(method_cfg, str) else method_cfg
    # Hydra merges instantiate's keyword arguments into the config, and a dataclass (Skeleton) would be converted
    # into a config node; binding it after instantiation hands the object over untouched.
    return instantiate(cfg, _partial_=True, _convert_="all")(skeleton=skeleton)


def build_trunk(trunk_cfg: DictConfig | str):
    """Instantiate a trunk from its config (or from its name in ``conf/trunk``)."""
    from hydra.utils import instantiate

    cfg = load_group("trunk", trunk_cfg) if isinstance(trunk_cfg, str) else trunk_cfg
    # Pretrained weights are read by the trainer at the start of a run, not by every model built from the config.
    return instantiate({k: v for k, v in cfg.items() if k != PRETRAINED}, _convert_="all")


def build_model(trunk_cfg: DictConfig | str, method_cfg: DictConfig | str, skeleton: Skeleton):
    """A :class:`~bottomup.model.PoseModel` for any trunk x method combination."""
    from bottomup.model import PoseModel

    return PoseModel(build_trunk(trunk_cfg), build_method(method_cfg, skeleton))
