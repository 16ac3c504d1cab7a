"""Config plumbing: Hydra/OmegaConf sections -> validated dataclasses.

Merging into the dataclass schema rejects unknown keys (a typo) and wrong types with
OmegaConf's one-line message before any work starts.

One source of truth for defaults: each section's dataclass is its schema and holds the defaults;
the section's base YAML lists the same keys and values, with a one-line comment each, for users:

  conf/data/via.yaml          DataConfig (+ ResizeConfig, AugmentConfig, SyntheticConfig)
  conf/model/maskrcnn.yaml    ModelConfig (+ AnchorConfig), booksegm/model/build.py
  conf/train/default.yaml     OptimConfig (+ StageConfig), booksegm/model/module.py
  conf/predict.yaml           PredictConfig, booksegm/predict.py
  conf/evaluate.yaml          EvaluateConfig, booksegm/evaluate.py
  conf/export.yaml            ExportConfig, booksegm/export.py
  conf/callbacks/default.yaml EMAWeights' and ModelInALine's arguments, booksegm/model/ema.py, summary.py

A YAML value may differ only where the dataclass cannot hold it: a required value (``???``,
a field without a default) or an interpolation such as ``${paths.cache_dir}``. The other YAMLs
(conf/data/synthetic|coco|yolo, conf/model/maskrcnn_cpu, conf/profile/*, conf/experiment/*) are
overrides: their values differ on purpose, but every key they set is a schema field.
tests/test_config_schema.py holds all of this. Each section is converted to its dataclass once,
where it is used (``to_dataclass``); Lightning hyperparameters stay plain dicts.
"""

from __future__ import annotations

import secrets
from typing import Any, TypeVar

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
