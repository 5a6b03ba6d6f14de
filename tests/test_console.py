"""What a user sees of a run outside TensorBoard: the terminal (progress bar, filtered noise) and the checkpoint names."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fusionseg.callbacks.progress import StepProgressBar


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(10, 2)), batch_size=2)  # 5 batches an epoch


class _Seen(L.Callback):
    """What the bar showed when training started and at its end."""

    def __init__(self, bar: StepProgressBar) -> None:
        self.bar, self.start = bar, None

    def on_train_start(self, trainer, pl_module):
        self.start = (self.bar.train_progress_bar.n, self.bar.train_progress_bar.total)


def _fit(root, max_steps: int, ckpt_path=None) -> tuple[StepProgressBar, _Seen, L.Trainer]:
    bar = StepProgressBar()
    seen = _Seen(bar)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", default_root_dir=root, logger=False,
                        callbacks=[bar, seen], enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(_Tiny(), ckpt_path=ckpt_path)
    return bar, seen, trainer


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_the_bar_counts_steps_of_the_whole_run_across_epochs_and_resumes(tmp_path, capsys):
    bar, seen, trainer = _fit(tmp_path, max_steps=7)
    assert seen.start == (0, 7)
    assert bar.train_progress_bar.n == 7 and bar.train_progress_bar.desc.startswith("fit")
    metrics = bar.get_metrics(trainer, trainer.lightning_module)
    assert "v_num" not in metrics and "train/loss" in metrics
    err = capsys.readouterr().err
    assert "Epoch" not in err and "/-2" not in err and "v_num" not in err
    trainer.save_checkpoint(tmp_path / "at7.ckpt")

    bar, seen, _ = _fit(tmp_path, max_steps=12, ckpt_path=tmp_path / "at7.ckpt")  # mid-epoch (5 batches/epoch)
    assert seen.start == (7, 12) and bar.train_progress_bar.n == 12


def test_known_harmless_warnings_and_tips_are_hidden_and_the_rest_passes(caplog):
    import logging
    import warnings

    from fusionseg.console import quiet_known_noise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()
        warnings.warn("Found 6 module(s) in eval mode at the start of training. This may lead to ...")
        warnings.warn("warmup_steps=50 exceeds the 30 optimizer steps of this run")  # ours: it matters
    assert [str(w.message) for w in caught] == ["warmup_steps=50 exceeds the 30 optimizer steps of this run"]

    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=log.name):
        log.info("💡 Tip: For seamless cloud logging ... try installing litlogger")
        log.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_the_best_checkpoint_is_named_by_step_and_metric():
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fusionseg.callbacks.checkpointing import BestCheckpoint, best_filename

    named = ModelCheckpoint(filename=best_filename("val/mIoU"), auto_insert_metric_name=False)
    assert named.format_checkpoint_name({"step": torch.tensor(400), "val/mIoU": torch.tensor(41.63)}).endswith(
        "best-step=400-mIoU=41.6.ckpt")
    assert BestCheckpoint(filename="mine-{step}").filename == "mine-{step}"  # a given name is kept
