"""Non-finite values are errors: `fit` stops at the first NaN loss (step, loss terms, cause, hint) and never
saves a checkpoint of non-finite weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from fusionseg.callbacks.checkpointing import LastCheckpoint
from fusionseg.callbacks.finite_guard import FiniteGuard, NonFiniteError, non_finite_tensors


class _NaNAt(BoringModel):
    """A model whose loss turns NaN at optimizer step `step`, with its loss terms logged as fusionseg's are."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.nan_step = step

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)["loss"]
        if self.global_step >= self.nan_step:
            loss = loss * float("nan")
        self.log_dict({"train/loss_ce": loss.detach(), "train/loss_dice": torch.tensor(0.5)})
        return loss


def _fit(root: Path, model, steps: int = 6) -> Trainer:
    trainer = Trainer(default_root_dir=root, max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, accelerator="cpu",
                      callbacks=[LastCheckpoint(every_n_train_steps=1), FiniteGuard()])
    trainer.fit(model)
    return trainer


def test_fit_stops_at_the_first_nan_loss_with_the_step_the_terms_and_a_hint(tmp_path):
    model = _NaNAt(3)
    with pytest.raises(NonFiniteError) as err:
        _fit(tmp_path, model)
    message = str(err.value)
    assert "loss is nan at step 3" in message and "loss_ce=nan" in message and "loss_dice=0.5" in message
    assert "fusionseg profile" in message and "--model.lr" in message
    assert err.value.step == 3
    assert not non_finite_tensors(dict(model.state_dict()))  # the NaN step changed no weight
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 and not non_finite_tensors(last["state_dict"])


def test_a_checkpoint_of_non_finite_weights_is_never_written(tmp_path):
    class Poisoned(BoringModel):
        def on_before_optimizer_step(self, optimizer):  # step 2's update makes a weight infinite
            if self.global_step == 1:
                with torch.no_grad():
                    self.layer.weight[0, 0] = float("inf")

    expected = r"refusing to save a checkpoint at step 2: 1 weight tensor.*layer\.weight"
    with pytest.raises(NonFiniteError, match=expected):
        _fit(tmp_path, Poisoned())
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]


def test_non_finite_tensors_names_only_the_bad_ones():
    tensors = {"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([float("-inf")]),
               "ids": torch.arange(3), "empty": torch.zeros(0)}
    assert non_finite_tensors(tensors) == ["b", "c"]
