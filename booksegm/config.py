"""Config plumbing: Hydra/OmegaConf sections -> validated dataclasses.

Merging into the dataclass schema rejects unknown keys (a typo) and wrong types with
OmegaConf's one-line message before any work starts.

One source of truth for defaults: each section's dataclass is its schema and holds the defaults;
the section's base YAML lists the same keys and values, with a one-line comment each, for users:

  conf/data/via.yaml          DataConfig (+ ResizeConfig, AugmentConfig, SyntheticConfig)
  conf/model/maskrcnn.yaml    ModelConfig (+ AnchorConfig), booksegm/model/build.py
  conf/train/default.yaml     OptimConfig (+ StageConfig), booksegm/training/module.py
  conf/predict.yaml           PredictConfig (+ PhotoSettings, booksegm/photos.py), booksegm/cli/predict.py
  conf/inventory.yaml         PhotoSettings, booksegm/photos.py (booksegm/cli/inventory.py)
  conf/evaluate.yaml          EvaluateConfig, booksegm/cli/evaluate.py
  conf/export.yaml            ExportConfig, booksegm/cli/export.py
  conf/callbacks/default.yaml EMAWeights' and ModelInALine's arguments, booksegm/training/ema.py, summary.py

A YAML value may differ only where the dataclass cannot hold it: a required value (``???``,
a field without a default) or an interpolation such as ``${paths.cache_dir}``. The other YAMLs
(conf/data/synthetic|coco|yolo, conf/model/maskrcnn_cpu, conf/profile/*, conf/experiment/*) are
overrides: their values differ on purpose, but every key they set is a schema field.
tests/test_config_schema.py holds all of this. Each section is converted to its dataclass once,
where it is used (``to_dataclass``); Lightning hyperparameters stay plain dicts.

Before Hydra reads a command line, :func:`check_command_line` refuses a key the config does not have,
with or without ``+``, in one line naming the closest known key: Hydra refused ``trainer.max_epoch=1``
in five lines without one and took ``+foo=1`` in silence. The sections in ``FREE_FORM_SECTIONS`` take
keys of the user's choosing, and a ``_target_``'s section takes the target's arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import inspect
import io
import secrets
from importlib.resources import files
from typing import Any, TypeVar

from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from booksegm.errors import UserError

T = TypeVar("T")

# Run folders are named by the second a run started plus this random suffix (conf/hydra/default.yaml):
# two runs started in the same second must not share a folder, or their checkpoints, logs and
# metrics.json overwrite each other. Cached: the name resolves to the same folder all run long.
OmegaConf.register_new_resolver("run_suffix", lambda: secrets.token_hex(3), use_cache=True, replace=True)


class ConfigError(UserError, ValueError):
    """A config value that cannot work; raised before any training starts, in one line."""


def to_dataclass(schema: type[T], section: DictConfig | dict | None, name: str = "") -> T:
    try:
        # resolve first: interpolations point outside the section (${paths.cache_dir})
        merged = OmegaConf.merge(OmegaConf.structured(schema), as_plain(section) or {})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        where = f"{name}: " if name else ""
        raise ConfigError(f"{where}{str(err).splitlines()[0]}") from None


def as_plain(section: Any) -> Any:
    """A DictConfig/ListConfig as plain Python containers (for hyperparameters and YAML)."""
    return OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else section


# Sections whose keys are the user's to choose, as their YAML says: a callback or a logger is added under a
# name of one's own (+callbacks.early_stop={_target_: ...}), data.class_aliases maps any spelling, and
# Hydra checks its own hydra.* keys.
FREE_FORM_SECTIONS = ("callbacks", "logger", "hydra", "data.class_aliases")
INSTANTIATE_KEYS = {"_target_", "_args_", "_partial_", "_recursive_", "_convert_"}  # Hydra's, beside the arguments


def read_command_line(argv: list[str]) -> argparse.Namespace | None:
    """Hydra's own reading of ``argv`` (program first): its flags, and in ``overrides`` the words that
    are overrides, wherever they stand; None for a command line Hydra refuses (a bad flag) or answers
    and exits on (--version): Hydra then says so itself."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return get_args_parser().parse_args(argv[1:])
        except SystemExit:
            return None


def check_command_line(config_name: str, argv: list[str]) -> None:
    """Raise a ConfigError naming the closest known key for an override (``argv[1:]``) of a key that
    ``config_name`` composed with the command line's group choices does not have. A command line Hydra
    itself refuses, or one that does not compose a config (--help), is left to Hydra."""
    args = read_command_line(argv)
    if args is None or any((args.help, args.hydra_help, args.info, args.shell_completion, args.config_path,
                            args.config_name, args.config_dir, args.experimental_rerun)):
        return
    conf = files("booksegm.conf")
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
        groups = [o for o in overrides if o.key_or_group.startswith("hydra/") or conf.joinpath(o.key_or_group).is_dir()]
        # a group swept over (+experiment=a,b) is composed with its first choice
        choices = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
                   else o.input_line for o in groups]
        with initialize_config_module("booksegm.conf", version_base="1.3"):
            config = OmegaConf.to_container(compose(config_name, overrides=choices), resolve=False)
    except (HydraException, OmegaConfBaseException):
        return
    for override in overrides:
        if override not in groups and not override.is_delete() and override.key_or_group.split(".")[0] != "hydra":
            check_key(config, override)


def check_key(config: dict, override: Override) -> None:
    key = override.key_or_group
    node, found = config, []
    for part in key.split("."):
        if not isinstance(node, dict):
            return  # below a value or inside a list: OmegaConf says what does not fit
        if part not in node:
            break
        node, found = node[part], [*found, part]
    else:
        if override.type is OverrideType.ADD:
            raise ConfigError(f"+{key}: {key} is in the config already; set it without the +")
        return
    section, missing = ".".join(found), key.split(".")[len(found)]
    known = accepted_keys(section, node)
    if known is not None and missing not in known:
        close = difflib.get_close_matches(missing, sorted(known), n=1)
        where = f"{section}." if section else ""
        hint = (f"did you mean {where}{close[0]}?" if close else
                f"{section or 'the config'} has {', '.join(sorted(k for k in known if k not in INSTANTIATE_KEYS))}")
        raise ConfigError(f"unknown config key {key}: {hint}")
    if override.type is OverrideType.CHANGE:
        raise ConfigError(f"{key} is not in the config yet: add it with +{key}=VALUE")


def accepted_keys(section: str, node: dict) -> set[str] | None:
    """The keys ``section`` takes (None: any), ``node`` being its composed content."""
    if section in FREE_FORM_SECTIONS:
        return None
    if "_target_" not in node:
        return set(node)
    try:
        parameters = inspect.signature(get_object(node["_target_"])).parameters.values()
    except Exception:  # a target that does not import: Hydra says so when it instantiates it
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):  # the target passes on any keyword
        return None
    return set(node) | INSTANTIATE_KEYS | {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                     p.KEYWORD_ONLY)}
