"""A run that is stopped (SIGTERM, SIGINT) or killed and then resumed ends with exactly the weights of an
uninterrupted run on CPU: the checkpoint holds the generators' states, augmentations are seeded per item,
and a stop signal saves the current step and exits non-zero."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn

from fusionseg.callbacks.checkpointing import LastCheckpoint
from fusionseg.callbacks.preemption import Preempted, Preemption
from fusionseg.callbacks.rng_state import RNGStates, capture_rng_states, restore_rng_states
from fusionseg.data.collate import SegCollate
from fusionseg.data.resumable import ResumableReportingDataLoader, SeededIndex, item_seed
from fusionseg.data.synthetic import SyntheticDataset
from fusionseg.data.transforms import TrainTransform


class _Tiny(LightningModule):
    """A model whose training step draws random numbers, as Mask2Former's point sampling and dropout do."""

    def __init__(self, num_workers: int = 0) -> None:
        super().__init__()
        self.num_workers = num_workers
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def training_step(self, batch, batch_idx):
        feats = self.drop(self.conv(batch.images))
        points = torch.rand(feats.shape[0], 16, 2) * 2 - 1  # random sample points
        sampled = nn.functional.grid_sample(feats, points[:, None], align_corners=False)
        return sampled.pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = SyntheticDataset(12, 32, transform=TrainTransform(24, (0.5, 1.5)))
        return ResumableReportingDataLoader(data, batch_size=2, shuffle=True, num_workers=self.num_workers,
                                            collate_fn=SegCollate(pad_targets=True), stage="train")


class _Kill(Callback):
    """Sends `signum` to this process during training step `step` (as a scheduler would, at any moment)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), self.signum)


class _Crash(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")


def _fit(root: Path, steps: int, *extra: Callback, ckpt_path: str | None = None, workers: int = 0) -> _Tiny:
    seed_everything(0, workers=True)
    model = _Tiny(workers)
    trainer = Trainer(default_root_dir=root, max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=True, accelerator="cpu",
                      callbacks=[LastCheckpoint(every_n_train_steps=2), RNGStates(), Preemption(), *extra])
    trainer.fit(model, ckpt_path=ckpt_path)
    return model


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


# -- exact resume ----------------------------------------------------------------------------------------------
def test_a_crashed_run_resumed_from_last_ckpt_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    straight = _fit(tmp_path / "straight", 8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(tmp_path / "run", 8, _Crash(5))  # last.ckpt holds step 4; step 5 is lost with the crash
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    resumed = _fit(tmp_path / "run", 8, ckpt_path="last")
    _assert_same_weights(straight, resumed)


def test_without_the_generator_states_a_resumed_run_drifts(tmp_path):
    """The check above is a real one: resuming with fresh generators ends elsewhere."""
    straight = _fit(tmp_path / "straight", 6)
    with pytest.raises(RuntimeError):
        _fit(tmp_path / "run", 6, _Crash(3))
    ckpt_path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    del ckpt["callbacks"]["RNGStates"]
    torch.save(ckpt, ckpt_path)
    resumed = _fit(tmp_path / "run", 6, ckpt_path="last")
    assert any(not torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_the_checkpoint_holds_every_generator_and_the_loaders_seed(tmp_path):
    _fit(tmp_path, 2)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)  # plain types only
    (state,) = ckpt["callbacks"]["RNGStates"]["ranks"]
    assert {"torch", "numpy", "python"} <= set(state)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["seed"] == 0


def test_generator_states_round_trip():
    saved = capture_rng_states()
    first = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    restore_rng_states(saved)
    again = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_a_checkpoint_of_another_world_size_is_refused_with_both_sizes():
    with pytest.raises(ValueError, match="written by 2 process.*this run has 1"):
        RNGStates().load_state_dict({"ranks": [capture_rng_states(), capture_rng_states()]})


def test_augmentations_depend_on_the_item_and_epoch_not_on_the_worker():
    data = SyntheticDataset(4, 32, transform=TrainTransform(24, (0.5, 1.5)))
    a = data[SeededIndex(2, item_seed(0, 1, 2))]
    torch.rand(100)  # whatever else the process drew meanwhile
    b = data[SeededIndex(2, item_seed(0, 1, 2))]
    c = data[SeededIndex(2, item_seed(0, 2, 2))]
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)
    assert len({item_seed(0, e, i) for e in range(20) for i in range(50)}) == 1000


# -- stop signals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_saves_the_current_step_and_exits_non_zero(tmp_path, signum, code):
    with pytest.raises(Preempted) as stopped:
        _fit(tmp_path / "run", 8, _Kill(3, signum))
    assert stopped.value.code == code and stopped.value.step == 3
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3  # every_n_train_steps=2 would have kept step 2 only
    assert signal.getsignal(signum) is not None and not isinstance(signal.getsignal(signum), type(Preemption()._handle))
    resumed = _fit(tmp_path / "run", 8, ckpt_path="last")
    _assert_same_weights(_fit(tmp_path / "straight", 8), resumed)


def _children() -> list[int]:
    """Pids of this process's child processes (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_stop_signals_do_not_kill_the_loader_workers(tmp_path):
    """The scheduler signals the whole process group; workers leave the stop to the main process."""
    seen = {}

    class SignalGroup(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 2:
                pids = seen["pids"] = _children()  # the loader's workers
                for pid in [*pids, os.getpid()]:
                    os.kill(pid, signal.SIGTERM)

    with pytest.raises(Preempted) as stopped:
        _fit(tmp_path, 6, SignalGroup(), workers=2)
    assert len(seen["pids"]) == 2
    assert stopped.value.code == 143 and stopped.value.step == 3  # the signal came after this step's check


def test_unknown_signal_names_are_refused():
    with pytest.raises(ValueError, match="SIGNOPE"):
        Preemption(signals=["SIGNOPE"])
