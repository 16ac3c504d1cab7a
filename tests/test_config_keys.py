"""A key the config does not have stops every Hydra command in one line naming the closest known key,
with or without ``+`` (Hydra refused ``foo=1`` in five lines and took ``+foo=1`` in silence); the
free-form sections and a ``_target_``'s arguments take keys of the user's choosing."""

from __future__ import annotations

import sys

import pytest

from booksegm.cli.main import main
from booksegm.config import ConfigError, check_command_line

TOP_LEVEL = ("callbacks, ckpt_path, data, logger, model, optimized_metric, paths, seed, task_name, train, "
             "trainer")


@pytest.mark.parametrize("overrides, message", [
    (["+foo=1"], f"unknown config key foo: the config has {TOP_LEVEL}"),
    (["foo=1"], f"unknown config key foo: the config has {TOP_LEVEL}"),
    (["trainer.max_epoch=1"], "unknown config key trainer.max_epoch: did you mean trainer.max_epochs?"),
    (["+trainer.max_epoch=1"], "unknown config key trainer.max_epoch: did you mean trainer.max_epochs?"),
    (["+model.anchor_sizes=[16]"], "unknown config key model.anchor_sizes: did you mean model.anchors?"),
    (["+modle.backbone=resnet18"], "unknown config key modle.backbone: did you mean model?"),
    (["+paths.cache=/tmp"], "unknown config key paths.cache: did you mean paths.cache_dir?"),
    (["+callbacks.ema.decy=0.9"], "unknown config key callbacks.ema.decy: did you mean callbacks.ema.decay?"),
    (["+callbacks.step_checkpoint.every_n_train_step=50"], "unknown config key "
     "callbacks.step_checkpoint.every_n_train_step: did you mean callbacks.step_checkpoint.every_n_train_steps?"),
    (["+seed=3"], "+seed: seed is in the config already; set it without the +"),
    (["trainer.max_steps=30"], "trainer.max_steps is not in the config yet: add it with +trainer.max_steps=VALUE"),
    (["-m", "+experiment=cpu_long,book_spines", "+data.val_fractoin=0.5"],
     "unknown config key data.val_fractoin: did you mean data.val_fraction?"),  # a group swept over
    (["--cfg", "job", "+foo=1"], f"unknown config key foo: the config has {TOP_LEVEL}"),
    # accepted: a Trainer argument, free-form sections, a logger that passes on any keyword, Hydra's own
    (["+trainer.max_steps=30", "seed=1,2", "--multirun"], None),
    (["+callbacks.early_stop={_target_: pytorch_lightning.callbacks.EarlyStopping, monitor: val/mask_AP}"], None),
    (["data=via", "data.root=/photos", "+data.class_aliases.book-s-spine=book"], None),
    (["+logger.tensorboard.flush_secs=30"], None),
    (["+experiment=cpu_long", "trainer.max_epochs=3", "hydra.run.dir=/tmp/run", "+hydra.job.env_set.A=1"], None),
    (["~callbacks.ema", "data.val_resize={mode: square, min_dim: 64, max_dim: 64}"], None),
    (["--help", "+foo=1"], None),  # Hydra's help composes nothing
])
def test_an_unknown_key_is_refused_with_the_closest_known_one(overrides, message):
    if message is None:
        check_command_line("config", ["train", *overrides])
    else:
        with pytest.raises(ConfigError) as error:
            check_command_line("config", ["train", *overrides])
        assert str(error.value) == message


@pytest.mark.parametrize("command, overrides, message", [
    ("train", ["+foo=1"], f"unknown config key foo: the config has {TOP_LEVEL}"),
    ("evaluate", ["ckpt_path=/no/such.ckpt", "max_sides=800"], "unknown config key max_sides: did you mean max_side?"),
    ("evaluate", ["ckpt_path=/no/such.ckpt", "+data.val_fractoin=0.5"],
     "unknown config key data.val_fractoin: did you mean data.val_fraction?"),
    ("predict", ["photos/", "+score_treshold=0.5"], "unknown config key score_treshold: did you mean score_threshold?"),
    ("export", ["ckpt_path=/no/such.ckpt", "+formats=onnx"], "unknown config key formats: did you mean format?"),
    ("serve", ["prot=7861"], "unknown config key prot: did you mean port?"),
])
def test_every_hydra_command_stops_in_one_line_before_hydra_runs(command, overrides, message, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["booksegm"])  # the dispatcher sets the command's own
    with pytest.raises(SystemExit) as exit_:
        main([command, *overrides])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1:] == [f"booksegm: error: {message}"]
