"""Training gets past unreadable images: found at start-up (skipped with the check's message) or
broken after it (skipped mid-run and counted), instead of dying mid-epoch with nothing saved."""

from __future__ import annotations

import logging
from dataclasses import asdict

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from support import BOOK, NO_AUGMENT, run_train, tiny_config, truncate_jpeg, write_via_set
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.data.resize import ResizeConfig
from booksegm.training.module import BookSegmModule, OptimConfig


def test_training_skips_a_truncated_jpeg_found_at_start_up_and_runs_to_the_end(tmp_path):
    data = tmp_path / "data"
    write_via_set(data, {f"{name}.jpg": BOOK for name in "abcd"})
    truncate_jpeg(data / "c.jpg")
    # every image is loaded: 3 train in 2 batches, 1 val (before the fix, c.jpg's step raised)
    result = run_train(tmp_path, "data=via", f"data.root={data}", "data.resize.mode=none", "data.val_fraction=0.25",
                       "trainer.limit_train_batches=2")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    log = (run_dir / "train.log").read_text()
    assert "4 listed, 4 found, 0 missing, 1 unreadable" in log
    assert "c.jpg: cannot decode: image file is truncated" in log
    assert (tmp_path / "cache" / "image_checks.json").is_file()  # the next run decodes nothing


def test_an_image_that_breaks_mid_training_is_skipped_counted_and_logged(tmp_path, caplog):
    write_via_set(tmp_path, {f"{name}.jpg": BOOK for name in "abc"})
    datamodule = BookDataModule(DataConfig(
        format="via", root=str(tmp_path), annotations="via_region_data.json", val_fraction=0.0, batch_size=1,
        num_workers=0, resize=ResizeConfig("none", 0, 0), augment=NO_AUGMENT, min_instance_area=4,
    ))
    datamodule.setup("fit")
    truncate_jpeg(tmp_path / "b.jpg")  # after the start-up check: its batch has no image left
    optim = OptimConfig(lr=0.001, warmup_steps=0, schedule="constant")
    module = BookSegmModule(model=asdict(tiny_config(weights="none")), optim=asdict(optim), class_names=["book"])
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, logger=TensorBoardLogger(tmp_path, name="tb", version=""),
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         accelerator="cpu", log_every_n_steps=1)
    with caplog.at_level(logging.WARNING):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2  # the two readable images
    assert "b.jpg: cannot decode: image file is truncated" in caplog.text
    assert "images skipped during the run as they no longer loaded: 1" in caplog.text
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.value for e in events.Scalars("data/skipped_images")] == [1]
