"""last.ckpt ends as the final model, also when the final validation is not the best."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from support import compose_config
from torch.utils.data import DataLoader, TensorDataset


class WorseEachEpoch(pl.LightningModule):
    """Validation's metric falls every epoch, so only the first validation is a new best."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.validations = 0

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/mask_AP", 1.0 / (self.current_epoch + 1))

    def on_validation_epoch_end(self):
        self.validations += 1

    def on_save_checkpoint(self, checkpoint):
        checkpoint["validations"] = self.validations  # as booksegm's module saves its validation history

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_last_ckpt_holds_the_final_steps_after_a_validation_that_is_not_the_best(tmp_path):
    callbacks = compose_config().callbacks
    checkpoints = [instantiate(callbacks.model_checkpoint, dirpath=str(tmp_path)),
                   instantiate(callbacks.step_checkpoint, dirpath=str(tmp_path), every_n_train_steps=5)]
    data = DataLoader(TensorDataset(torch.randn(6, 2)), batch_size=2)  # 3 steps an epoch
    trainer = pl.Trainer(max_epochs=4, check_val_every_n_epoch=2, callbacks=checkpoints, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         accelerator="cpu")
    trainer.fit(WorseEachEpoch(), train_dataloaders=data, val_dataloaders=data)

    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 12  # not 10, where step_checkpoint last wrote it
    assert last["validations"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch001-mask_ap0.5000.ckpt", "last.ckpt"]
