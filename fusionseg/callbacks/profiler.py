"""MetricProfiler: profile the master and auxiliary encoders before training and set the fusion plan.

Lightning's order in `fit` is: callbacks' `setup` -> checkpoint restore -> strategy setup, which
calls `configure_optimizers`. The plan decides which alignment layers exist, so it is set in
`setup`, before the optimizer is built. A resumed run takes the plan from its checkpoint (the
module restores it while the checkpoint loads) and is not profiled again.

Outside `fit` (validate/test/predict of a module whose plan is still `auto`, i.e. no checkpoint
brought one) the encoders are profiled on that stage's data when the stage starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader

import fusionseg
from fusionseg.callbacks.profile_cache import PerImageValues, ProfileCache, profile_key, weights_fingerprint
from fusionseg.callbacks.profile_report import log_profiles, make_plan
from fusionseg.encoders.base import Encoder
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.metrics import METRIC_NAMES, pyramid_metrics
from fusionseg.structures import SegBatch


def _all_gather_objects(trainer: Trainer, obj: Any) -> list[Any]:
    """`obj` from every rank, in rank order (a list of one without a process group)."""
    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def _first_loader(loaders: Any) -> DataLoader:
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    if not isinstance(loaders, DataLoader):
        raise TypeError(
            f"MetricProfiler profiles a torch DataLoader of SegBatch, got {type(loaders).__name__}; "
            "give the module a plan (plan=PATH or a dict) instead of 'auto'"
        )
    return loaders


class MetricProfiler(Callback):
    """Profiles the module's encoders (SC and EF per stride) and sets its fusion plan.

    Args:
        num_batches: batches of the stage's data to profile (a fixed, seeded choice of images, with the
            training transforms and batch size), split across DDP ranks and gathered.
        seed: picks the images and seeds the metrics' k-means.
        cache_dir: profile cache folder (default `$FUSIONSEG_PROFILE_CACHE` or `~/.cache/fusionseg/profiles`).
        use_cache: read and write the cache.
        task: the plan's task (`semantic`, `instance`, `panoptic` or `edge`); None uses the module's task.

    Only modules whose plan is still `auto` (`module.needs_plan`) are profiled. After a run,
    `profiles` holds `{role: {"encoder", "values", "from_cache"}}` and `plan` the plan that was set.
    The CLI sets `resume_checkpoint` when `fit` resumes; a plain `Trainer.fit(ckpt_path=...)` is not
    visible in `setup`, and there the checkpoint's plan replaces the profiled one when it loads.
    """

    def __init__(self, num_batches: int = 8, seed: int = 0, cache_dir: str | None = None, use_cache: bool = True,
                 task: str | None = None) -> None:
        if num_batches < 1:
            raise ValueError(f"num_batches={num_batches} must be >= 1")
        self.num_batches = num_batches
        self.seed = seed
        self.cache = ProfileCache(cache_dir)
        self.use_cache = use_cache
        self.task = task
        self.resume_checkpoint: str | None = None
        self.profiles: dict[str, dict[str, Any]] = {}
        self.plan: dict[str, Any] | None = None

    # -- when -----------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not self._needs_plan(pl_module):
            return
        resume = self.resume_checkpoint or trainer.ckpt_path
        if resume:
            rank_zero_info(f"MetricProfiler: resuming from {resume}; the fusion plan comes from the checkpoint")
            return
        source = trainer.datamodule if trainer.datamodule is not None else pl_module
        self.profile_and_plan(trainer, pl_module, _first_loader(source.train_dataloader()))

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and self._needs_plan(pl_module):
            self.profile_and_plan(trainer, pl_module, _first_loader(trainer.val_dataloaders))

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._needs_plan(pl_module):
            self.profile_and_plan(trainer, pl_module, _first_loader(trainer.test_dataloaders))

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._needs_plan(pl_module):
            self.profile_and_plan(trainer, pl_module, _first_loader(trainer.predict_dataloaders))

    @staticmethod
    def _needs_plan(pl_module: LightningModule) -> bool:
        if not hasattr(pl_module, "needs_plan"):
            raise TypeError(f"MetricProfiler works with FusedSegModule; got {type(pl_module).__name__}")
        return bool(pl_module.needs_plan)

    # -- what -----------------------------------------------------------------------------------
    def profile_and_plan(self, trainer: Trainer, pl_module: LightningModule, loader: DataLoader) -> None:
        """Profile master and aux on `num_batches` batches of `loader`'s dataset and call `set_plan`."""
        encoders = self._encoders(pl_module)
        batches = self._batches(trainer, loader)
        values = self._profile_values(trainer, pl_module, encoders, batches)
        task = self.task or pl_module.task
        plan = make_plan(pl_module.master_spec, pl_module.aux_spec, values, task)
        pl_module.set_plan(plan)
        self.plan = plan.to_dict()
        rank_zero_info(f"MetricProfiler: {plan.summary()}")
        log_profiles(trainer, pl_module, values, plan, {r: p["from_cache"] for r, p in self.profiles.items()})

    @staticmethod
    def _encoders(pl_module: LightningModule) -> dict[str, tuple[EncoderSpec, Encoder]]:
        encoders = {"master": (pl_module.master_spec, pl_module.master)}
        if pl_module.aux is not None:
            encoders["aux"] = (pl_module.aux_spec, pl_module.aux)
        return encoders

    def _batches(self, trainer: Trainer, loader: DataLoader) -> _ProfileBatches:
        dataset = loader.dataset
        batch_size = loader.batch_size or 1
        count = min(len(dataset), self.num_batches * batch_size)  # type: ignore[arg-type]
        if count == 0:
            raise ValueError("MetricProfiler: the dataset to profile is empty")
        generator = torch.Generator().manual_seed(self.seed)
        indices = torch.randperm(len(dataset), generator=generator)[:count].tolist()  # type: ignore[arg-type]
        image_id = getattr(dataset, "image_id", None)
        ids = [str(image_id(i)) if callable(image_id) else str(i) for i in indices]
        return _ProfileBatches(dataset, indices, ids, batch_size, loader.collate_fn, trainer.global_rank,
                               trainer.world_size)

    def _profile_values(self, trainer: Trainer, pl_module: LightningModule,
                        encoders: dict[str, tuple[EncoderSpec, Encoder]], batches: _ProfileBatches
                        ) -> dict[str, PerImageValues]:
        # Rank 0 decides what the cache holds (its first batch gives the image size) and tells the others.
        keys: dict[str, str] = {}
        cached: dict[str, PerImageValues | None] = {role: None for role in encoders}
        if trainer.is_global_zero and self.use_cache:
            size = tuple(batches.first().images.shape[-2:])
            # The package version stands for the metrics' implementation: a new release measures afresh.
            settings = {"seed": self.seed, "metrics": list(METRIC_NAMES), "fusionseg": fusionseg.__version__}
            for role, (spec, encoder) in encoders.items():
                keys[role] = profile_key(spec, weights_fingerprint(spec, encoder), batches.ids, size, settings)
                cached[role] = self.cache.get(keys[role])
        cached = trainer.strategy.broadcast(cached, src=0)

        values: dict[str, PerImageValues] = {}
        to_compute = [role for role in encoders if cached[role] is None]
        computed = self._compute(trainer, pl_module, {r: encoders[r][1] for r in to_compute}, batches)
        for role, (spec, _) in encoders.items():
            hit = cached[role] is not None
            values[role] = cached[role] if hit else computed[role]  # type: ignore[assignment]
            self.profiles[role] = {"encoder": str(spec), "values": values[role], "from_cache": hit}
            if hit:
                rank_zero_info(f"MetricProfiler: {role} {spec} profile read from the cache ({self.cache.dir})")
            elif trainer.is_global_zero and self.use_cache:
                self.cache.put(keys[role], values[role], meta={"encoder": str(spec), "num_images": len(batches.ids)})
        return values

    @torch.no_grad()
    def _compute(self, trainer: Trainer, pl_module: LightningModule, encoders: dict[str, Encoder],
                 batches: _ProfileBatches) -> dict[str, PerImageValues]:
        """Per-image metrics of each encoder over this rank's batches, gathered from every rank."""
        if not encoders:
            return {}
        device = trainer.strategy.root_device
        modes = {role: enc.training for role, enc in encoders.items()}
        local: list[tuple[int, dict[str, dict[int, dict[str, list[float]]]]]] = []
        try:
            for role, enc in encoders.items():
                enc.to(device).eval()
            for index, batch in batches.mine():
                images = batch.images.to(device)
                per_role = {}
                for role, enc in encoders.items():
                    with trainer.precision_plugin.forward_context():
                        feats = enc(enc.normalize(images))
                    per_role[role] = per_image_metrics(feats, images, batch.image_sizes, self.seed)
                local.append((index, per_role))
        finally:
            for role, enc in encoders.items():
                enc.train(modes[role])
        merged = sorted((item for rank_items in _all_gather_objects(trainer, local) for item in rank_items),
                        key=lambda item: item[0])
        out: dict[str, PerImageValues] = {}
        for role in encoders:
            out[role] = {}
            for _, per_role in merged:
                for stride, metrics in per_role[role].items():
                    for name, vals in metrics.items():
                        out[role].setdefault(stride, {}).setdefault(name, []).extend(vals)
        return out

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"profiles": self.profiles, "plan": self.plan}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.profiles = dict(state_dict.get("profiles") or {})
        self.plan = state_dict.get("plan")


def per_image_metrics(feats: dict[int, Tensor], images: Tensor, image_sizes: Sequence[tuple[int, int]],
                       seed: int) -> dict[int, dict[str, list[float]]]:
    """`{stride: {metric: [value per image]}}`, measured on each image's unpadded part."""
    feats = {s: f.float() for s, f in feats.items()}
    full = tuple(images.shape[-2:])
    if all(tuple(size) == full for size in image_sizes):
        return _to_lists(pyramid_metrics(feats, images, seed=seed))
    out: dict[int, dict[str, list[float]]] = {}
    for i, (h, w) in enumerate(image_sizes):
        crop = {s: f[i : i + 1, :, : math.ceil(h / s), : math.ceil(w / s)] for s, f in feats.items()}
        for stride, metrics in _to_lists(pyramid_metrics(crop, images[i : i + 1, :, :h, :w], seed=seed)).items():
            for name, vals in metrics.items():
                out.setdefault(stride, {}).setdefault(name, []).extend(vals)
    return out


def _to_lists(values: dict[int, dict[str, Tensor]]) -> dict[int, dict[str, list[float]]]:
    return {int(s): {m: v.float().cpu().tolist() for m, v in per.items()} for s, per in values.items()}


class _ProfileBatches:
    """The profiled images in batches; this rank loads batches `rank, rank + world_size, ...`."""

    def __init__(self, dataset: Any, indices: list[int], ids: list[str], batch_size: int, collate_fn: Any,
                 rank: int, world_size: int) -> None:
        self.dataset, self.indices, self.ids = dataset, indices, ids
        self.batch_size, self.collate_fn = batch_size, collate_fn
        self.rank, self.world_size = rank, world_size
        self.num_batches = math.ceil(len(indices) / batch_size)
        self._first: SegBatch | None = None

    def _load(self, index: int) -> SegBatch:
        chunk = self.indices[index * self.batch_size : (index + 1) * self.batch_size]
        batch = self.collate_fn([self.dataset[i] for i in chunk]) if self.collate_fn else None
        if not isinstance(batch, SegBatch):
            raise TypeError(f"MetricProfiler expects batches of SegBatch, the loader's collate_fn gave {type(batch)}")
        return batch

    def first(self) -> SegBatch:
        if self._first is None:
            self._first = self._load(0)
        return self._first

    def mine(self) -> Iterator[tuple[int, SegBatch]]:
        for index in range(self.rank, self.num_batches, self.world_size):
            yield index, (self.first() if index == 0 else self._load(index))

