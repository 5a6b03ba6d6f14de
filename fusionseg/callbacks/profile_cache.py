"""On-disk cache of per-image encoder metrics, so a second run with the same encoders skips profiling.

An entry is keyed by what decides the numbers: the encoder spec, a fingerprint of its weights,
the profiled images (their ids, how many, their size) and the metric settings. It holds the
per-image metric values, from which the profile (means and spreads) is rebuilt.

Weights fingerprint: for a `weights=PATH` file, sha256 of its size, mtime and first and last MiB
(cheap for multi-GiB files); otherwise (random-init or built-in encoders) sha256 of the state dict.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusionseg import metrics
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.io_atomic import atomic_write_text

CACHE_ENV = "FUSIONSEG_PROFILE_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/fusionseg/profiles"
CACHE_FORMAT = 1
_MIB = 1 << 20

# Per-image metrics of one encoder as plain lists (JSON, checkpoints): {stride: {field: [value per image]}}.
PerImageValues = dict[int, dict[str, list[float]]]


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir` if given, else `$FUSIONSEG_PROFILE_CACHE`, else `~/.cache/fusionseg/profiles`."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's size, mtime and first and last MiB."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with path.open("rb") as f:
        digest.update(f.read(_MIB))
        if stat.st_size > _MIB:
            f.seek(max(_MIB, stat.st_size - _MIB))
            digest.update(f.read(_MIB))
    return digest.hexdigest()


def state_dict_fingerprint(module: nn.Module) -> str:
    """sha256 over every tensor of `module.state_dict()` (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def weights_fingerprint(spec: EncoderSpec, encoder: nn.Module) -> str:
    """The weights file's fingerprint when the spec names an existing one, else the state dict's."""
    weights = spec.args.get("weights")
    if weights is not None and Path(str(weights)).expanduser().is_file():
        return "file:" + file_fingerprint(Path(str(weights)).expanduser())
    return "state:" + state_dict_fingerprint(encoder)


def profile_key(spec: EncoderSpec, fingerprint: str, image_ids: Sequence[str], image_size: Sequence[int],
                settings: Mapping[str, Any] | None = None) -> str:
    """Cache key of one encoder's per-image metrics over a set of images."""
    payload = {
        "format": CACHE_FORMAT,
        "metrics": metrics.IMPLEMENTATION,  # values from older metric code are not reused
        "encoder": str(spec),
        "weights": fingerprint,
        "num_images": len(image_ids),
        "image_ids": sorted(str(i) for i in image_ids),
        "image_size": [int(s) for s in image_size],
        "settings": dict(settings or {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ProfileCache:
    """A folder of `<key>.json` files, each one encoder's per-image metric values."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.dir = resolve_cache_dir(cache_dir)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> PerImageValues | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return {int(s): {m: [float(v) for v in vals] for m, vals in per.items()} for s, per in data["values"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # a damaged entry is recomputed and overwritten

    def put(self, key: str, values: PerImageValues, meta: Mapping[str, Any] | None = None) -> Path:
        """Write atomically (`fusionseg.io_atomic`, as checkpoints are), so no run reads half an entry."""
        payload = {"meta": dict(meta or {}), "values": {str(s): per for s, per in values.items()}}
        return atomic_write_text(self.path(key), json.dumps(payload, default=float))
