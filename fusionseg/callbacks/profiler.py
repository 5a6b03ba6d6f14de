"""MetricProfiler: profile the master and auxiliary encoders before training and set the fusion plan.

Lightning's order in `fit` is: callbacks' `setup` -> checkpoint restore -> strategy setup (DDP
wrapping, then `configure_optimizers`). The plan decides which encoder trains and which alignment
layers exist, so it is set in `setup`, before the model is wrapped and the optimizer is built. A
resumed run takes the plan from its checkpoint: the module restores it (`on_load_checkpoint`) and it
replaces the profiled one; the profile cache makes that profiling a lookup. (Lightning tells no
callback before the restore that a checkpoint will come, unless `trainer.ckpt_path` was set by hand;
then profiling is skipped.)

Outside `fit` (validate/test/predict of a module whose plan is still `auto`, i.e. no checkpoint
brought one) the encoders are profiled on that stage's data when the stage starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader
from typing_extensions import override

import fusionseg
from fusionseg.callbacks.profile_cache import PerImageValues, ProfileCache, profile_key, weights_fingerprint
from fusionseg.callbacks.profile_report import choose_plan, log_profiles
from fusionseg.encoders.base import Encoder
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.plan import PLAN_TASKS
from fusionseg.profiling import DEFAULT_PLAN_METRIC, PLAN_METRICS, Profile, ProfileAccumulator
from fusionseg.profiling.measure import fields
from fusionseg.structures import SegBatch

ROLES = ("auto", "config")


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
        roles: `"auto"` (default): the metrics choose which configured encoder is the trainable master
            and which the frozen auxiliary (swapped before the optimizer exists, with a log line and the
            evidence in TensorBoard), as the paper does; `"config"`: keep the configuration's roles
            (a warning says when the metrics disagree).
        plan_metric: the per-stride score that picks the aux and its injection stride (`ef`, the paper's,
            or `ef_cc`; see `fusionseg.profiling.PLAN_METRICS`).

    Only modules whose plan is still `auto` (`module.needs_plan`) are profiled. After a run,
    `profiles` holds `{role: {"encoder", "values", "from_cache"}}` (roles as planned) and `plan` the
    plan that was set. An auxiliary whose scores are all zero or non-finite is refused with an error.
    """

    def __init__(self, num_batches: int = 8, seed: int = 0, cache_dir: str | None = None, use_cache: bool = True,
                 task: str | None = None, roles: Literal["auto", "config"] = "auto",
                 plan_metric: str = DEFAULT_PLAN_METRIC) -> None:
        if num_batches < 1:
            raise ValueError(f"num_batches={num_batches} must be >= 1")
        if roles not in ROLES:
            raise ValueError(f"roles={roles!r}; expected one of {ROLES}")
        if plan_metric not in PLAN_METRICS:
            raise ValueError(f"plan_metric={plan_metric!r}; expected one of {sorted(PLAN_METRICS)}")
        if task is not None and task not in PLAN_TASKS:
            raise ValueError(f"task={task!r}; expected one of {PLAN_TASKS} (or None for the module's task)")
        self.num_batches = num_batches
        self.seed = seed
        self.cache = ProfileCache(cache_dir)
        self.use_cache = use_cache
        self.task = task
        self.roles = roles
        self.plan_metric = plan_metric
        self.profiles: dict[str, dict[str, Any]] = {}
        self.plan: dict[str, Any] | None = None

    # -- when -----------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not self._needs_plan(pl_module):
            return
        if trainer.ckpt_path:  # set by hand before fit: the checkpoint brings the plan
            rank_zero_info(f"MetricProfiler: resuming from {trainer.ckpt_path}; the fusion plan comes from the checkpoint")
            return
        source = trainer.datamodule if trainer.datamodule is not None else pl_module
        self.profile_and_plan(trainer, pl_module, _first_loader(source.train_dataloader()))

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and self._needs_plan(pl_module):
            self.profile_and_plan(trainer, pl_module, _first_loader(trainer.val_dataloaders))

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._needs_plan(pl_module):
            self.profile_and_plan(trainer, pl_module, _first_loader(trainer.test_dataloaders))

    @override
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
        encoders = {"master": (pl_module.master_spec, pl_module.master), "aux": (pl_module.aux_spec, pl_module.aux)}
        names = pl_module.pyramid.names()
        batches = self._batches(trainer, loader)
        values, from_cache = self._profile_values(trainer, encoders, batches)
        profile = Profile.from_values({names[role]: v for role, v in values.items()})
        for line in profile.nonfinite_report():
            rank_zero_warn(f"MetricProfiler: {line}")
        plan = choose_plan(profile, names, self.task or pl_module.task, self.roles, self.plan_metric)
        pl_module.set_plan(plan)
        self.plan = plan.to_dict()
        # Keyed by the roles the plan gave (the metrics may have swapped the configured ones).
        role_of = {plan.master: "master", plan.aux: "aux"}
        self.profiles = {role_of[names[r]]: {"encoder": str(encoders[r][0]), "values": values[r],
                                             "from_cache": from_cache[r]} for r in encoders}
        # Prints the plan, why, and the SC/EF table; saves them under <root>/profile and sends them to the loggers.
        log_profiles(trainer, profile, plan, {role_of[names[r]]: from_cache[r] for r in encoders})

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

    def _profile_values(self, trainer: Trainer, encoders: dict[str, tuple[EncoderSpec, Encoder]],
                        batches: _ProfileBatches) -> tuple[dict[str, PerImageValues], dict[str, bool]]:
        # Rank 0 decides what the cache holds (its first batch gives the image size) and tells the others.
        keys: dict[str, str] = {}
        cached: dict[str, PerImageValues | None] = {role: None for role in encoders}
        if trainer.is_global_zero and self.use_cache:
            size = tuple(batches.first().images.shape[-2:])
            # The package version stands for the metrics' implementation: a new release measures afresh.
            settings = {"seed": self.seed, "metrics": list(fields()), "fusionseg": fusionseg.__version__}
            for role, (spec, encoder) in encoders.items():
                keys[role] = profile_key(spec, weights_fingerprint(spec, encoder), batches.ids, size, settings)
                cached[role] = self.cache.get(keys[role])
        cached = trainer.strategy.broadcast(cached, src=0)

        to_compute = {role: encoders[role][1] for role in encoders if cached[role] is None}
        computed = self._measure(trainer, to_compute, batches)
        values: dict[str, PerImageValues] = {}
        for role, (spec, _) in encoders.items():
            hit = cached[role] is not None
            values[role] = cached[role] if hit else computed[role]  # type: ignore[assignment]
            if hit:
                rank_zero_info(f"MetricProfiler: {role} {spec} profile read from the cache ({self.cache.dir})")
            elif trainer.is_global_zero and self.use_cache:
                self.cache.put(keys[role], values[role], meta={"encoder": str(spec), "num_images": len(batches.ids)})
        return values, {role: cached[role] is not None for role in encoders}

    @torch.no_grad()
    def _measure(self, trainer: Trainer, encoders: dict[str, Encoder], batches: _ProfileBatches
                 ) -> dict[str, PerImageValues]:
        """Per-image metrics of each encoder: this rank measures its batches, `compute()` gathers every rank's."""
        if not encoders:
            return {}
        device = trainer.strategy.root_device
        modes = {role: enc.training for role, enc in encoders.items()}
        accumulators = {role: ProfileAccumulator(list(enc.pyramid), seed=self.seed).to(device)
                        for role, enc in encoders.items()}
        try:
            for role, enc in encoders.items():
                enc.to(device).eval()
            for index, batch in batches.mine():
                images = batch.images.to(device)
                first = index * batches.batch_size
                order = range(first, first + images.shape[0])
                for role, enc in encoders.items():
                    with trainer.precision_plugin.forward_context():
                        feats = enc(enc.normalize(images))
                    accumulators[role].update(feats, images, batch.image_sizes, order=order)
        finally:
            for role, enc in encoders.items():
                enc.train(modes[role])
        return {role: {s: {name: v.tolist() for name, v in per.items()} for s, per in acc.compute().items()}
                for role, acc in accumulators.items()}

    # -- checkpoints ------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"profiles": self.profiles}  # the plan itself is stored once, by the module

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.profiles = dict(state_dict.get("profiles") or {})


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

