"""Checkpoints are written atomically: a full disk, a kill, or a `$TMPDIR` on another filesystem never
leaves a truncated checkpoint, and the previous ones stay whole."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from fusionseg.callbacks.checkpointing import (
    AtomicCheckpointIO,
    BestCheckpoint,
    LastCheckpoint,
    remove_stale_temp_files,
)
from fusionseg.io_atomic import atomic_open, atomic_torch_save, atomic_write_bytes, atomic_write_text


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- the helper ------------------------------------------------------------------------------------------------
@given(old=st.binary(max_size=64), new=st.binary(max_size=64), fail=st.booleans())
def test_a_file_holds_the_old_bytes_or_the_new_ones(tmp_path_factory, old, new, fail):
    folder = tmp_path_factory.mktemp("atomic")
    path = atomic_write_bytes(folder / "f.bin", old)
    try:
        with atomic_open(path) as f:
            f.write(new[: len(new) // 2])
            if fail:
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write(new[len(new) // 2:])
    except OSError:
        assert fail
    assert path.read_bytes() == (old if fail else new)
    assert _leftovers(folder) == []


def test_the_temporary_file_lies_beside_the_destination_whatever_tmpdir_says(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    monkeypatch.setattr("tempfile.tempdir", str(elsewhere))
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moves.append((Path(src), Path(dst))), real_replace(src, dst)))
    atomic_write_text(tmp_path / "run" / "note.txt", "hello")
    (src, dst), = moves
    assert src.parent == dst.parent == tmp_path / "run"  # a rename within one folder, never a copy
    assert (tmp_path / "run" / "note.txt").read_text() == "hello" and list(elsewhere.iterdir()) == []


def test_finished_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic_torch_save({"w": torch.ones(2)}, tmp_path / "a.ckpt")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # mkstemp's 0600 would hide it from the group
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))


def test_only_whole_files_are_accepted_as_modes(tmp_path):
    with pytest.raises(ValueError, match="'wb' or 'w'"), atomic_open(tmp_path / "x", "ab"):
        pass


# -- the trainer's checkpoints -------------------------------------------------------------------------------
class _Model(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("score", -float(self.global_step))  # a monitored value: every checkpoint is a new best
        return out


def _trainer(root: Path, steps: int, **kwargs) -> Trainer:
    callbacks = [LastCheckpoint(every_n_train_steps=1),
                 BestCheckpoint(monitor="score", mode="min", save_top_k=3, filename="best-{step}")]
    # One batch per epoch: the best checkpoint is judged at every epoch's end, so every step writes two files.
    return Trainer(default_root_dir=root, max_steps=steps, limit_train_batches=1, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=callbacks,
                   **kwargs)


def _disk_fills_up(monkeypatch, folder: Path, after_saves: int) -> None:
    """Writes of checkpoint bytes into `folder` fail with ENOSPC half-way once `after_saves` checkpoints exist,
    whichever route the bytes take there: torch.save into the file, or a copy from a staging file elsewhere."""
    real_save, real_copyfile = torch.save, shutil.copyfile

    def full(path) -> bool:
        return Path(path).resolve().parent == folder.resolve() and len(list(folder.glob("*.ckpt"))) >= after_saves

    def save(obj, f, *args, **kwargs):
        target = getattr(f, "name", f)
        if isinstance(target, int):  # a file opened from a descriptor
            target = os.readlink(f"/proc/self/fd/{target}")
        if isinstance(target, (str, os.PathLike)) and full(target):
            real_save(obj, f, *args, **kwargs)  # the bytes exist, but only half reach the disk
            f.truncate(f.tell() // 2)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    def copyfile(src, dst, **kwargs):
        if full(dst):
            data = Path(src).read_bytes()
            Path(dst).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copyfile(src, dst, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "copyfile", copyfile)


def _tmpdir_on_another_filesystem(monkeypatch, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test folder's")
    staging = Path(os.environ.get("FUSIONSEG_TEST_SHM", shm)) / f"fusionseg-{os.getpid()}-{tmp_path.name}"
    staging.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(staging))
    monkeypatch.setattr("tempfile.tempdir", str(staging))
    return staging


def test_a_full_disk_during_a_checkpoint_leaves_the_previous_checkpoints_whole(tmp_path, monkeypatch):
    staging = _tmpdir_on_another_filesystem(monkeypatch, tmp_path)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    _disk_fills_up(monkeypatch, folder, after_saves=3)
    trainer = _trainer(tmp_path, steps=6)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit(_Model())
    names = sorted(p.name for p in folder.iterdir())
    assert _leftovers(folder) == []
    for path in folder.glob("*.ckpt"):  # every checkpoint left there is whole
        assert torch.load(path, weights_only=True)["global_step"] >= 1, path
    assert "last.ckpt" in names and len(names) == 3, names
    shutil.rmtree(staging, ignore_errors=True)


def test_checkpoints_do_not_cross_filesystems_when_tmpdir_is_elsewhere(tmp_path, monkeypatch):
    staging = _tmpdir_on_another_filesystem(monkeypatch, tmp_path)

    def no_copy(*args, **kwargs):
        raise AssertionError("a checkpoint was copied across filesystems; a kill during the copy truncates it")

    monkeypatch.setattr(shutil, "move", no_copy)
    monkeypatch.setattr(shutil, "copyfile", no_copy)
    trainer = _trainer(tmp_path, steps=2)
    trainer.fit(_Model())
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert list(staging.iterdir()) == []
    shutil.rmtree(staging, ignore_errors=True)


def test_a_configured_checkpoint_writer_is_kept(tmp_path):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class Mine(TorchCheckpointIO):
        pass

    trainer = _trainer(tmp_path, steps=1, plugins=[Mine()])
    trainer.fit(_Model())
    assert type(trainer.strategy.checkpoint_io) is Mine


def test_temporary_files_of_a_killed_write_are_removed_at_the_next_fit(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")
    (folder / "notes.tmp").write_text("not ours")
    assert [p.name for p in remove_stale_temp_files(folder)] == [".last.ckpt.abc123.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == ["notes.tmp"]


def test_kill_9_while_last_ckpt_is_replaced_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    """A writer replaces a 4 MB checkpoint in a loop, `$TMPDIR` elsewhere; killed at any moment, the file loads."""
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": -1, "w": torch.full((1 << 20,), -1.0)}, path)
    monkeypatch.setattr("tempfile.tempdir", "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp_path))
    steps = []
    for delay in (0.02, 0.07, 0.11, 0.19):
        pid = os.fork()  # a writer with everything imported already
        if pid == 0:
            try:
                io, step = AtomicCheckpointIO(), 0
                while True:
                    io.save_checkpoint({"step": step, "w": torch.full((1 << 20,), float(step))}, path)
                    step += 1
            finally:
                os._exit(1)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ckpt = torch.load(path, weights_only=True)  # a truncated file fails here
        assert ckpt["w"].numel() == 1 << 20 and float(ckpt["w"][-1]) == float(ckpt["step"])
        steps.append(ckpt["step"])
    assert max(steps) >= 0  # the writers did replace the file
    remove_stale_temp_files(tmp_path)
    assert _leftovers(tmp_path) == []
