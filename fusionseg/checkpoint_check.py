"""Checking a `--ckpt_path` file before Lightning loads it, so a wrong file gets a message instead of a traceback.

Lightning reports a random file as `UnpicklingError: invalid load key` (file not named), a plain state dict
as `KeyError: 'pytorch-lightning_version'`, a truncated file as `PytorchStreamReader failed reading zip
archive`. `check_checkpoint` names the file, says what it is and what was expected.
"""

from __future__ import annotations

import inspect
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

_LEGACY_TORCH = b"\x80\x02\x8a\x0a"  # torch.save's pre-1.6 format: a pickle of its magic number first
EXPECTED = ("a Lightning checkpoint written by `fusionseg fit` (`<default_root_dir>/checkpoints/last.ckpt` or "
            "`best-step=N.ckpt`), or `last` for the newest one")


class CheckpointError(ValueError):
    """A `--ckpt_path` that is not a checkpoint this run can resume or evaluate. `path` names the file."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        super().__init__(f"--ckpt_path {self.path}: {what}. Expected {EXPECTED}")


def _sniff(path: Path, head: bytes) -> None:
    """Raise for files that are not a torch archive at all, saying what they look like."""
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as err:
            raise CheckpointError(path, f"a damaged or truncated zip archive ({err}); the write or copy that made "
                                        f"it was probably cut short, use an earlier checkpoint") from None
        if not any(name.endswith("data.pkl") for name in names):
            raise CheckpointError(path, f"a zip archive, but not a PyTorch one (no data.pkl; holds {names[:3]})")
        return
    if head.startswith(_LEGACY_TORCH):
        return
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        raise CheckpointError(path, "a safetensors weights file (weights only, no training state); give it to an "
                                    "encoder as `weights=PATH` instead")
    if not head:
        raise CheckpointError(path, "an empty file")
    shown = head[:16]
    kind = "a text file" if all(32 <= b < 127 or b in b"\r\n\t" for b in head) else "not a PyTorch file"
    raise CheckpointError(path, f"{kind} (it starts with {shown!r}), not a torch.save archive")


def _load(path: Path, head: bytes) -> Any | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=not head.startswith(_LEGACY_TORCH))
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err) and "invalid load key" not in str(err):
            return None  # objects beyond plain tensors: Lightning decides whether to trust them
        raise CheckpointError(path, f"not readable as a PyTorch checkpoint ({str(err).splitlines()[0]})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(path, f"a damaged PyTorch file ({str(err).splitlines()[0]})") from None


def _prefixes(names: Any) -> set[str]:
    return {str(n).split(".", 1)[0] for n in names}


def check_checkpoint(path: str | Path, model: nn.Module | None = None, model_class: type | None = None) -> None:
    """Raise `CheckpointError` (or FileNotFoundError) if `path` is not a Lightning checkpoint of `model`'s kind.

    Checked, without reading the tensors (the file is memory-mapped): that it exists; that it is a torch.save
    archive (not text, not truncated, not safetensors); that it holds Lightning's training state (not a plain
    state dict); with `model_class`, that its hyperparameters are arguments of that class; with `model`, that
    its weights are named like the model's and that its `task` and `num_classes` match the model's.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--ckpt_path {path}: no such file. Expected {EXPECTED}")
    if not path.is_file():
        raise CheckpointError(path, "a folder, not a file")
    with path.open("rb") as f:
        head = f.read(64)
    _sniff(path, head)
    checkpoint = _load(path, head)
    if checkpoint is None:
        return
    if not isinstance(checkpoint, dict):
        raise CheckpointError(path, f"a saved {type(checkpoint).__name__}, not a checkpoint dictionary")
    if "pytorch-lightning_version" not in checkpoint:
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            example = next(iter(checkpoint))
            raise CheckpointError(path, f"a plain state dict ({len(checkpoint)} tensors, e.g. {example!r}) without "
                                        f"Lightning's training state ('pytorch-lightning_version', loops, optimizer)")
        raise CheckpointError(path, f"not a Lightning checkpoint (no 'pytorch-lightning_version'; its keys: "
                                    f"{sorted(map(str, checkpoint))[:8]})")
    if model_class is not None:
        _check_class(path, checkpoint, model_class)
    if model is not None:
        _check_model(path, checkpoint, model)


def _check_class(path: Path, checkpoint: dict[str, Any], model_class: type) -> None:
    hparams = checkpoint.get("hyper_parameters") or {}
    params = inspect.signature(model_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(str(k) for k in hparams if k not in params and not str(k).startswith("_"))
    if unknown:
        raise CheckpointError(path, f"a checkpoint of another model, or of an older version: its hyperparameters "
                                    f"{unknown[:5]} are not arguments of {model_class.__name__}")


def _check_model(path: Path, checkpoint: dict[str, Any], model: nn.Module) -> None:
    saved = _prefixes(checkpoint.get("state_dict", {}))
    expected = _prefixes(model.state_dict())
    if saved and expected and not saved & expected:
        raise CheckpointError(path, f"a checkpoint of another model: its weights are under {sorted(saved)[:6]}, "
                                    f"{type(model).__name__}'s under {sorted(expected)[:6]}")
    hparams = checkpoint.get("hyper_parameters") or {}
    for key in ("task", "num_classes"):
        mine = getattr(model, key, None)
        if key in hparams and mine is not None and hparams[key] != mine:
            raise CheckpointError(path, f"trained with {key}={hparams[key]!r}, but this run has {key}={mine!r} "
                                        f"(set by the data config); use the data settings of the run that wrote it")
