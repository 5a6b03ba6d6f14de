"""Loading encoder weights from local files only: safetensors, or torch files read safely."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not match the model."""


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from `path` (`.safetensors`, or a torch file loaded with `weights_only=True`).

    `key` selects a nested dict inside a torch checkpoint (e.g. `"model"` for SAM2's files).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path} (weights are read from local files only; pass weights=PATH)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"could not read weights from {path}: {type(err).__name__}: {err}. "
            f"Expected a .safetensors file or a torch checkpoint of tensors (.pt/.pth/.bin)"
        ) from err
    if key is not None:
        if not isinstance(state, Mapping) or key not in state:
            found = sorted(state)[:8] if isinstance(state, Mapping) else type(state).__name__
            raise WeightsError(f"{path}: expected the weights under key {key!r}; top-level entries are {found}")
        state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return dict(state)


def load_matching(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    rename: Callable[[str], str | None] = lambda k: k,
    allow_missing: Callable[[str], bool] = lambda k: False,
) -> None:
    """Load `state` into `module` strictly, after renaming keys (`rename` returning None drops a key).

    Fails with counts and examples of missing, unexpected and mis-shaped keys; nothing is skipped silently.
    """
    renamed: dict[str, Tensor] = {}
    for k, v in state.items():
        new = rename(k)
        if new is not None:
            renamed[new] = v
    own = module.state_dict()
    missing = [k for k in own if k not in renamed and not allow_missing(k)]
    unexpected = [k for k in renamed if k not in own]
    shape = [f"{k}: file {tuple(renamed[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in renamed and renamed[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:5])})")
        raise WeightsError(
            f"weights from {source} do not match {type(module).__name__}: {'; '.join(parts)}. "
            f"Check the model size/variant matches the checkpoint."
        )
    module.load_state_dict({k: v for k, v in renamed.items() if k in own}, strict=False)
