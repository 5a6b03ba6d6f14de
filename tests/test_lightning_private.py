"""The private Lightning, torchmetrics and torch members fusionseg relies on still exist as we call them.

fusionseg.lightning_private holds every such use; if an upgrade renames or reshapes one, this test names
it, instead of a resume or a checkpoint failing deep inside a run.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

import fusionseg
from fusionseg import lightning_private
from fusionseg.lightning_private import OVERRIDDEN, find_last_checkpoints, last_saved_step, pin_logger_version


@pytest.mark.parametrize(("owner", "name", "params"), OVERRIDDEN, ids=[f"{o.__name__}.{n}" for o, n, _ in OVERRIDDEN])
def test_overridden_private_hooks_keep_their_signatures(owner: type, name: str, params: tuple[str, ...]) -> None:
    member = inspect.getattr_static(owner, name)
    if isinstance(member, property):
        assert params == ()
    else:
        assert tuple(inspect.signature(member).parameters) == params


def test_called_private_members_keep_their_signatures() -> None:
    assert tuple(inspect.signature(ModelCheckpoint._find_last_checkpoints).parameters) == ("self", "trainer")
    assert tuple(inspect.signature(ModelCheckpoint._save_last_checkpoint).parameters) == (
        "self", "trainer", "monitor_candidates")
    assert tuple(inspect.signature(ModelCheckpoint._monitor_candidates).parameters) == ("self", "trainer")
    assert last_saved_step(ModelCheckpoint()) == 0


def test_last_checkpoints_are_found_as_lightning_resolves_ckpt_path_last(tmp_path: Path) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"")
    callback = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = Trainer(default_root_dir=tmp_path, callbacks=[callback], logger=False, enable_progress_bar=False)
    assert find_last_checkpoints(callback, trainer) == {str(tmp_path / "last.ckpt")}


def test_a_tensorboard_logger_built_without_a_version_is_pinned_to_the_resumed_one(tmp_path: Path) -> None:
    logger = TensorBoardLogger(save_dir=tmp_path)
    assert pin_logger_version(logger, 3)
    assert logger.version == 3
    assert not pin_logger_version(logger, 4), "a logger whose version is fixed keeps it"
    assert not pin_logger_version(TensorBoardLogger(save_dir=tmp_path, version=1), 3)


def test_no_other_module_reaches_into_lightning_privates() -> None:
    # `<object>._find_last_checkpoints(` style calls on Lightning objects belong in lightning_private only.
    private_calls = re.compile(r"\b(callback|trainer|logger|cb)\._(find_last|save_last|monitor_candidates|version\b|last_global)")
    offenders = []
    for path in Path(fusionseg.__file__).parent.rglob("*.py"):
        if path.name == Path(lightning_private.__file__).name:
            continue
        offenders += [f"{path.name}: {line.strip()}" for line in path.read_text().splitlines() if private_calls.search(line)]
    assert offenders == []
