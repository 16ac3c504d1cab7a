"""One source of truth for config defaults (booksegm/config.py): each section's dataclass holds the
defaults, its base YAML lists the same values, and every key any YAML sets is a schema field."""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from booksegm.cli import train
from booksegm.cli.evaluate import EvaluateConfig
from booksegm.cli.export import ExportConfig
from booksegm.cli.predict import PredictConfig
from booksegm.cli.serve import ServeSettings
from booksegm.data.datamodule import DataConfig
from booksegm.data.resize import ResizeConfig
from booksegm.model.build import ModelConfig
from booksegm.photos import PhotoSettings
from booksegm.training.module import OptimConfig

CONF = Path(files("booksegm.conf"))  # the configs the entry points load: pkg://booksegm.conf

# base YAML -> the dataclass whose defaults it lists
BASES = {
    "data/via.yaml": DataConfig,
    "model/maskrcnn.yaml": ModelConfig,
    "train/default.yaml": OptimConfig,
    "predict.yaml": PredictConfig,
    "inventory.yaml": PhotoSettings,
    "serve.yaml": ServeSettings,
    "evaluate.yaml": EvaluateConfig,
    "export.yaml": ExportConfig,
}
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": OptimConfig}  # of train's composed config
INSTANTIATED = ("callbacks", "logger")  # sections of `_target_` entries: their keys are the target's arguments
# train's own top-level keys, read directly by booksegm/cli/train.py (task_name names the run folder)
RUN_KEYS = {"task_name", "seed", "ckpt_path", "optimized_metric"}
NOT_SETTINGS = {"defaults", "task_name"}  # Hydra's, in every command YAML

# every variant a user can pick: each is composed and its keys checked against the schemas
VARIANTS = [
    *(f"{group}={p.stem}" for group in ("data", "model", "profile", "trainer")
      for p in sorted((CONF / group).glob("*.yaml"))),
    *(f"+experiment={p.stem}" for p in sorted((CONF / "experiment").glob("*.yaml"))),
]


def compose_config(*overrides: str, config_name: str = "config"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def disagreements(yaml, default, where: str) -> list[str]:
    """Where a YAML value (plain, unresolved) differs from the dataclass default."""
    if isinstance(yaml, dict) and isinstance(default, dict):
        problems = []
        for key in [*yaml, *(k for k in default if k not in yaml)]:
            if key not in default:
                problems.append(f"{where}.{key}: in the YAML, not in the dataclass")
            elif key not in yaml:
                problems.append(f"{where}.{key}: in the dataclass, not in the YAML")
            else:
                problems += disagreements(yaml[key], default[key], f"{where}.{key}")
        return problems
    if isinstance(yaml, list) and isinstance(default, list) and len(yaml) == len(default):
        return [p for i, (y, d) in enumerate(zip(yaml, default)) for p in disagreements(y, d, f"{where}[{i}]")]
    # An interpolation (${paths.cache_dir}/...) can only live in the YAML: a dataclass cannot refer to
    # other sections. The dataclass then says "set by the config" with None or a required field (???).
    if isinstance(yaml, str) and "${" in yaml and default in (None, "???"):
        return []
    same = type(yaml) is type(default) and yaml == default
    if isinstance(yaml, (int, float)) and isinstance(default, (int, float)) and bool not in (type(yaml), type(default)):
        same = math.isclose(yaml, default, rel_tol=1e-9)
    return [] if same else [f"{where}: YAML {yaml!r}, dataclass {default!r}"]


def nested_schema(annotation) -> type | None:
    """The dataclass inside a field's type (ResizeConfig | None, list[StageConfig]), if any."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    return next(filter(None, map(nested_schema, typing.get_args(annotation))), None)


def unknown_keys(schema: type, node: dict, where: str) -> list[str]:
    """Keys of ``node`` (recursively) that ``schema`` has no field for."""
    hints = typing.get_type_hints(schema)
    problems = []
    for key, value in node.items():
        if key not in hints:
            problems.append(f"{where}.{key}")
            continue
        sub = nested_schema(hints[key])
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if sub is not None and isinstance(item, dict):
                problems += unknown_keys(sub, item, f"{where}.{key}" + (f"[{i}]" if isinstance(value, list) else ""))
    return problems


def target_problems(node: dict, where: str, base: bool) -> list[str]:
    """A `_target_` entry's keys must be arguments of the target; in a base YAML, booksegm's own
    targets (the dataclass rule's equivalent) must list every argument at its default. A booksegm
    subclass that keeps its parent's arguments (a Lightning callback's) is held to the first rule only."""
    target = get_class(node["_target_"])
    params = inspect.signature(target).parameters
    args = {k: v for k, v in node.items() if not k.startswith("_")}
    problems = [f"{where}.{key}: not an argument of {node['_target_']}" for key in args if key not in params]
    if base and target.__init__.__module__.startswith("booksegm."):
        defaults = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
        problems += disagreements(args, defaults, where)
    return problems


@pytest.mark.parametrize("path", BASES)
def test_a_base_yaml_lists_every_dataclass_default(path):
    schema = BASES[path]
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / path), resolve=False)
    yaml = {k: v for k, v in yaml.items() if k not in NOT_SETTINGS}
    default = OmegaConf.to_container(OmegaConf.structured(schema))  # required fields read "???"
    assert not disagreements(yaml, default, path), "\n".join(disagreements(yaml, default, path))


def test_callback_yaml_lists_booksegm_callbacks_at_their_defaults():
    callbacks = OmegaConf.to_container(OmegaConf.load(CONF / "callbacks" / "default.yaml"), resolve=False)
    problems = [p for name, node in callbacks.items() for p in target_problems(node, f"callbacks.{name}", base=True)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", ["", *VARIANTS])
def test_every_key_a_config_sets_is_a_schema_field(variant):
    cfg = OmegaConf.to_container(compose_config(*filter(None, [variant])), resolve=False)
    problems = [p for name, schema in SECTIONS.items() for p in unknown_keys(schema, cfg[name], name)]
    # a stage's resize holds data.resize keys (merged into it when the stage starts)
    for i, stage in enumerate(cfg["train"]["stages"] or []):
        problems += unknown_keys(ResizeConfig, stage.get("resize") or {}, f"train.stages[{i}].resize")
    problems += target_problems(cfg["trainer"], "trainer", base=False)
    problems += [p for section in INSTANTIATED for name, node in cfg[section].items() if node is not None
                 for p in target_problems(node, f"{section}.{name}", base=False)]
    groups = {"data", "model", "train", "trainer", "callbacks", "logger", "paths"}
    problems += [f"{key}: no schema" for key in set(cfg) - groups - RUN_KEYS]
    assert not problems, "\n".join(problems)


def test_search_space_names_schema_fields():
    params = OmegaConf.load(CONF / "hparams_search" / "optuna.yaml").hydra.sweeper.params
    for key in params:
        if key.startswith("+"):  # a config group (+experiment), checked above
            continue
        section, _, rest = key.partition(".")
        assert OmegaConf.select(OmegaConf.structured(SECTIONS[section]), rest, default="?") != "?", key


def test_train_builds_each_section_once(tmp_path, monkeypatch):
    """The module converts model and train once; train.build must not convert them again."""
    made = Counter()

    def counted(init):
        def counting_init(self, *args, **kwargs):
            made[type(self)] += 1
            init(self, *args, **kwargs)
        return counting_init

    for schema in SECTIONS.values():
        monkeypatch.setattr(schema, "__init__", counted(schema.__init__))
    cfg = compose_config(f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", "data.num_workers=0",
                         "data.synthetic.num_images=8", "data.synthetic.width=64", "data.synthetic.height=48")
    datamodule, module = train.build(cfg)
    assert made == {DataConfig: 1, ModelConfig: 1, OptimConfig: 1}
    assert isinstance(module.hparams.model, dict) and isinstance(module.hparams.optim, dict)  # checkpoints stay plain
