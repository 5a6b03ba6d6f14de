"""Non-finite values stop `fit` instead of being trained on and saved.

A NaN loss turns every weight into NaN in one optimizer step; the run would go on, log numbers and save
"best" and "last" checkpoints of NaN weights. `FiniteGuard` checks the loss before each backward pass and
stops at the first non-finite one, naming the step, the loss terms logged for it, where the NaN comes from
when it can tell (non-finite input images, or which encoder's features at which stride), and what to try.
It also refuses to write a checkpoint whose weights are not finite, so no NaN state is ever saved.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

HINTS = (
    "an encoder whose features are NaN or Inf (check it with `fusionseg profile`, which reports non-finite "
    "feature maps per encoder and stride), a learning rate too high (`--model.lr`), or float16 overflow "
    "(`--trainer.precision bf16-mixed` or `32-true`)"
)


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss or weights. `step` is the optimizer step, `terms` the logged loss terms."""

    def __init__(self, message: str, step: int, terms: dict[str, float] | None = None) -> None:
        self.step, self.terms = step, dict(terms or {})
        super().__init__(message)


def _terms(trainer: Trainer) -> dict[str, float]:
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.startswith("train/") and "loss" in key:
            out[key.removeprefix("train/")] = float(value)
    return out


def non_finite_tensors(tensors: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or Inf (one host sync for all of them)."""
    names = [n for n, t in tensors.items() if torch.is_tensor(t) and t.is_floating_point() and t.numel()]
    if not names:
        return []
    flags = torch.stack([~torch.isfinite(tensors[n]).all() for n in names]).cpu().tolist()
    return [n for n, bad in zip(names, flags) if bad]


def describe_features(pl_module: LightningModule, batch: Any) -> str | None:
    """Where non-finite values first appear for `batch`: the images, or an encoder's features at a stride.

    Uses the module's `pyramid.parts(images)` (master / aux / fused feature pyramids) when it has one;
    None when nothing non-finite is found or the module cannot tell.
    """
    images = getattr(batch, "images", None)
    if not torch.is_tensor(images):
        return None
    if not torch.isfinite(images).all():
        return "the input images hold NaN or Inf values"
    pyramid = getattr(pl_module, "pyramid", None)
    if pyramid is None or not hasattr(pyramid, "parts"):
        return None
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            parts = pyramid.parts(images)
    except Exception:  # a diagnosis only: the error being reported matters more
        return None
    finally:
        pl_module.train(was_training)
    found = []
    for role in ("master", "aux", "fused"):
        feats = getattr(parts, role, None)
        if not isinstance(feats, dict):
            continue
        bad = non_finite_tensors({str(stride): f for stride, f in feats.items()})
        if bad:
            spec = getattr(pl_module, f"{role}_spec", None) or getattr(getattr(pl_module, "hparams", {}), role, None)
            who = f"the {role} encoder" + (f" ({spec})" if spec else "")
            found.append(f"{who} at stride(s) {', '.join(bad)}")
        if found and role != "fused":
            break  # the first source is the cause; what is fused from it follows
    return "non-finite features from " + "; ".join(found) if found else None


class FiniteGuard(Callback):
    """Stops `fit` at the first non-finite loss, before its backward pass, and never saves non-finite weights."""

    def __init__(self) -> None:
        self._batch: Any = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch = batch  # for the diagnosis, should this step's loss be non-finite

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._batch = None

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        step = trainer.global_step
        terms = _terms(trainer)
        shown = ", ".join(f"{k}={v:.4g}" if math.isfinite(v) else f"{k}={v}" for k, v in sorted(terms.items()))
        source = describe_features(pl_module, self._batch) if self._batch is not None else None
        message = (
            f"fit: the training loss is {float(loss.detach().float().mean())} at step {step}"
            + (f" ({shown})" if shown else "")
            + (f"; {source}" if source else "")
            + f". Training stopped before this step changed any weight; no checkpoint of it was written. "
            f"Likely causes: {HINTS}"
        )
        raise NonFiniteError(message, step, terms)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(
                f"fit: refusing to save a checkpoint at step {trainer.global_step}: {len(bad)} weight tensor(s) hold "
                f"NaN or Inf (e.g. {', '.join(bad[:3])}). Likely causes: {HINTS}", trainer.global_step,
            )
