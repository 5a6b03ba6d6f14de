"""One run per folder: a new `fit` does not write over another run's checkpoints, and a resumed run keeps
logging to its TensorBoard version.

`fit` without `--ckpt_path` into a `default_root_dir` whose checkpoint folder already holds checkpoints
would replace that run's `last.ckpt` (and `--ckpt_path last` would then resume the wrong run).
`check_run_folder` refuses it, naming the two ways on, unless the user asks to overwrite. The checkpoint
callbacks record the TensorBoard version in every checkpoint (`RUN_KEY`), so a resumed run can continue it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

RUN_KEY = "fusionseg_run"  # checkpoint entry: {"logger_version": ...}
OVERWRITE_FLAG = "--overwrite_checkpoints true"


class RunFolderError(FileExistsError):
    """A new fit would write into the checkpoint folder of another run. `checkpoints` lists what is there."""

    def __init__(self, root: str | Path, checkpoints: list[Path]) -> None:
        self.root, self.checkpoints = Path(root), checkpoints
        shown = ", ".join(str(p) for p in checkpoints[:3]) + (" ..." if len(checkpoints) > 3 else "")
        super().__init__(
            f"fit: {self.root} already holds another run's checkpoints ({shown}), and a new run would write over "
            f"them. Either resume that run with `--ckpt_path last`, or start this one in another folder with "
            f"`--trainer.default_root_dir <new folder>`. To start afresh here anyway, pass {OVERWRITE_FLAG}."
        )


def existing_checkpoints(folders: Iterable[str | Path]) -> list[Path]:
    """The `*.ckpt` files already in `folders` (sorted, `last*.ckpt` first)."""
    found: set[Path] = set()
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            found.update(p for p in folder.glob("*.ckpt") if p.is_file())
    return sorted(found, key=lambda p: (not p.name.startswith("last"), str(p)))


def slurm_will_resume(root: str | Path) -> bool:
    """True when Lightning will resume this run by itself: a requeued SLURM job with an `hpc_ckpt_*.ckpt`."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect() and any(Path(root).glob("hpc_ckpt_*.ckpt"))


def check_run_folder(root: str | Path, checkpoint_folders: Iterable[str | Path], ckpt_path: str | None,
                     overwrite: bool = False) -> None:
    """Raise `RunFolderError` if a fit without `ckpt_path` would write where another run's checkpoints are."""
    if ckpt_path is not None or overwrite or slurm_will_resume(root):
        return
    found = existing_checkpoints(checkpoint_folders)
    if found:
        raise RunFolderError(root, found)


def logger_version(ckpt_path: str | Path) -> Any | None:
    """The TensorBoard version the run that wrote `ckpt_path` logged to, if it recorded one."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable files are check_checkpoint's to report
        return None
    run = checkpoint.get(RUN_KEY) if isinstance(checkpoint, dict) else None
    return run.get("logger_version") if isinstance(run, dict) else None

