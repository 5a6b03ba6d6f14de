"""`profile_encoders`: every encoder, every stride of its pyramid, over the same images."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from fusionseg.profiling.accumulator import ProfileAccumulator
from fusionseg.profiling.profile import Profile


def _image_batches(images: Tensor | Iterable[Any], batch_size: int, limit: int | None) -> Iterator[Tensor]:
    """Batches of at most `batch_size` images, `limit` images in all (None: every image)."""
    source = [images] if isinstance(images, Tensor) else images
    left = math.inf if limit is None else limit
    for batch in source:
        batch = getattr(batch, "images", batch)  # a SegBatch brings its images
        if not isinstance(batch, Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
            shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
            raise ValueError(f"images must be (N, 3, H, W) tensors in [0, 1] (or batches of them), got {shape}")
        for chunk in batch.split(batch_size):
            if left <= 0:
                return
            chunk = chunk[: int(min(left, chunk.shape[0]))]
            left -= chunk.shape[0]
            yield chunk
        if left <= 0:
            return


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


@torch.no_grad()
def profile_encoders(
    encoders: Mapping[str, nn.Module],
    images: Tensor | Iterable[Any],
    num_images: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
    seed: int = 0,
) -> Profile:
    """Profile every encoder at every stride of its pyramid over the same images.

    `images` is an `(N, 3, H, W)` tensor in `[0, 1]` or an iterable of such batches (or of
    objects with an `.images` tensor, like `SegBatch`); at most `num_images` are used (None: all).
    Each encoder sees `encoder.normalize(images)` on its own device, in eval mode without gradients;
    its training mode is restored afterwards. Every encoder is measured by a `ProfileAccumulator`
    at every stride of its pyramid (`encoder.pyramid`).
    """
    if not encoders:
        raise ValueError("profile_encoders needs at least one encoder")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = num_images if num_images is not None else (images.shape[0] if isinstance(images, Tensor) else None)
    modes = {name: enc.training for name, enc in encoders.items()}
    devices = {name: _device_of(enc) for name, enc in encoders.items()}
    accumulators = {name: ProfileAccumulator(list(enc.pyramid), seed=seed).to(devices[name])
                     for name, enc in encoders.items()}
    seen = 0
    try:
        for enc in encoders.values():
            enc.eval()
        with tqdm(total=total, unit="img", desc="profiling", disable=not progress) as bar:
            for batch in _image_batches(images, batch_size, num_images):
                for name, enc in encoders.items():
                    x = batch.to(devices[name], torch.float32)
                    accumulators[name].update(enc(enc.normalize(x)), x)
                seen += batch.shape[0]
                bar.update(batch.shape[0])
    finally:
        for name, enc in encoders.items():
            enc.train(modes[name])
    if seen == 0:
        raise ValueError("no images to profile: the image source was empty")
    return Profile.from_values({name: acc.compute() for name, acc in accumulators.items()})
