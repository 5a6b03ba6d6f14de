"""FusedSegModule end to end on tiny synthetic scenes: training, the frozen aux, plans, inference, checkpoints."""

from __future__ import annotations


import lightning as L
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from fusionseg.encoders import build
from fusionseg.heads import HeadConfig
from fusionseg.module import FusedSegModule
from fusionseg.optim import WarmupPoly, resolve_warmup, split_decay
from fusionseg.plan import FusionPlan
from fusionseg.structures import IGNORE_INDEX, SegBatch, SegTarget

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:.*module\\(s\\) in eval mode"),  # the frozen aux stays in eval mode on purpose
]

TINY = HeadConfig(num_queries=8, dec_layers=2, hidden_dim=32, train_points=512, enc_layers=1, num_heads=4,
                  dim_feedforward=64, enc_feedforward=64)
FUSED_PLAN = {"master": "regions", "aux": "edges", "strides": [16]}


def make_module(task: str = "semantic", **kwargs) -> FusedSegModule:
    args = dict(master="regions:channels=32", aux="edges:channels=16", plan={**FUSED_PLAN, "task": task}, task=task,
                num_classes=3, thing_ids=[1, 2], lr=3e-3, warmup_steps=0, head=TINY)
    args.update(kwargs)
    return FusedSegModule(**args)


def scene(task: str, h: int = 64, w: int = 64) -> tuple[torch.Tensor, SegTarget]:
    """Blue background (stuff class 0), two red squares (class 1) and a green one (class 2)."""
    image = torch.tensor([0.1, 0.2, 0.7]).view(3, 1, 1).repeat(1, h, w)
    things = []
    for y0, y1, x0, x1, colour, label in [(8, 30, 6, 28, (0.9, 0.1, 0.1), 1), (36, 60, 30, 58, (0.9, 0.1, 0.1), 1),
                                          (10, 26, 38, 60, (0.1, 0.9, 0.2), 2)]:
        y1, x1 = min(y1, h), min(x1, w)
        image[:, y0:y1, x0:x1] = torch.tensor(colour).view(3, 1, 1)
        mask = torch.zeros(h, w, dtype=torch.bool)
        mask[y0:y1, x0:x1] = True
        things.append((mask, label))
    background = ~torch.stack([m for m, _ in things]).any(0)
    if task == "semantic":
        masks, labels = [background, things[0][0] | things[1][0], things[2][0]], [0, 1, 2]
    elif task == "instance":
        masks, labels = [m for m, _ in things], [c for _, c in things]
    else:
        masks, labels = [background] + [m for m, _ in things], [0] + [c for _, c in things]
    return image, SegTarget(masks=torch.stack(masks), labels=torch.tensor(labels))


def train_batch(task: str) -> SegBatch:
    (a, ta), (b, tb) = scene(task), scene(task)
    b, tb.masks = b.flip(-1), tb.masks.flip(-1)
    return SegBatch(torch.stack([a, b]), [ta, tb], [(64, 64)] * 2, [(64, 64)] * 2, ["a", "b"])


def eval_batch(task: str) -> SegBatch:
    """Two images of 50 x 70 and 41 x 60 padded to 50 x 70 (not a multiple of 32); targets at their size."""
    (a, ta), (b, tb) = scene(task, 50, 70), scene(task, 41, 60)
    images = torch.zeros(2, 3, 50, 70)
    images[0], images[1, :, :41, :60] = a, b
    return SegBatch(images, [ta, tb], [(50, 70), (41, 60)], [(50, 70), (41, 60)], ["a", "b"])


def loader(batch: SegBatch, n: int = 1) -> DataLoader:
    return DataLoader([batch] * n, batch_size=None, collate_fn=lambda b: b)


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
    return L.Trainer(**{**defaults, **kwargs})


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_training_halves_the_loss_and_never_touches_the_aux(task: str) -> None:
    module = make_module(task)
    aux_before = {k: v.clone() for k, v in module.aux.state_dict().items()}
    recorder = LossRecorder()
    trainer(max_steps=60, callbacks=[recorder]).fit(module, loader(train_batch(task), 60))

    first, last = sum(recorder.losses[:3]) / 3, sum(recorder.losses[-3:]) / 3
    assert last <= 0.5 * first, f"{task}: loss {first:.2f} -> {last:.2f}"
    assert all(torch.equal(v, aux_before[k]) for k, v in module.aux.state_dict().items())
    groups = module.trainer.optimizers[0].param_groups
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert not {id(p) for p in module.aux.parameters()} & set(in_groups)
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert len(in_groups) == len(set(in_groups)) and set(in_groups) == trainable
    lr = {g["name"]: g["initial_lr"] for g in groups}
    assert set(lr) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert lr["backbone"] == lr["backbone_no_decay"] == pytest.approx(3e-4) and lr["head"] == pytest.approx(3e-3)


def test_a_frozen_master_trains_only_the_head_and_the_plan_is_fixed_once_optimizing() -> None:
    module = make_module(freeze_master=True)
    master_before = {k: v.clone() for k, v in module.master.state_dict().items()}
    trainer(max_steps=2).fit(module, loader(train_batch("semantic"), 2))
    assert [g["name"] for g in module.trainer.optimizers[0].param_groups] == ["head", "head_no_decay"]
    assert all(torch.equal(v, master_before[k]) for k, v in module.master.state_dict().items())
    with pytest.raises(RuntimeError, match="before the optimizer"):
        module.set_plan(FusionPlan("regions", "edges", strides=(8,)))


def test_bf16_mixed_precision_trains_and_predicts_on_cpu() -> None:
    module = make_module()
    recorder = LossRecorder()
    fit = trainer(max_steps=3, precision="bf16-mixed", callbacks=[recorder])
    fit.fit(module, loader(train_batch("semantic"), 3))
    assert all(torch.isfinite(torch.tensor(recorder.losses)))
    preds = fit.predict(module, loader(eval_batch("semantic")))[0]
    assert [p.semantic.shape for p in preds] == [(50, 70), (41, 60)]


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_predict_step_answers_at_the_original_size(task: str) -> None:
    module = make_module(task, head={**TINY.to_dict(), "object_mask_threshold": 0.0}).eval()
    batch = eval_batch(task)
    batch.orig_sizes = [(100, 140), (30, 44)]  # e.g. images resized for the model
    with torch.no_grad():
        preds = module.predict_step(batch)
    for p, size in zip(preds, batch.orig_sizes):
        if task != "instance":
            assert p.semantic.shape == size and p.semantic.dtype == torch.int64
            classes = set(p.semantic.unique().tolist()) - {IGNORE_INDEX}
            assert classes <= {0, 1, 2}
        if task != "semantic":
            k = p.labels.numel()
            assert p.masks.shape == (k, *size) and p.masks.dtype == torch.bool
            assert bool(((p.scores >= 0) & (p.scores <= 1)).all())
        if task == "instance":
            assert k == 8 * 2 and set(p.labels.tolist()) <= {1, 2}  # queries x thing classes


def test_auto_plan_waits_for_set_plan_and_checks_it() -> None:
    module = make_module(plan="auto")
    assert module.needs_plan and module.aux is not None
    with pytest.raises(RuntimeError, match="MetricProfiler"):
        module(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="does not name this model's encoders"):
        module.set_plan(FusionPlan("regions", "sam2", strides=(16,)))
    with pytest.raises(ValueError, match="aux None does not match"):
        module.set_plan(FusionPlan("regions"))
    with pytest.raises(ValueError, match="not in both pyramids"):
        module.set_plan(FusionPlan("regions:channels=32", "edges", strides=(64,)))
    module.set_plan(FusionPlan("regions:channels=32", "edges:channels=16", strides=(8, 16)))
    assert not module.needs_plan and module.pyramid.strides == (8, 16)
    assert module(torch.rand(1, 3, 64, 64)).mask_logits.shape == (1, 8, 16, 16)


def test_plan_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="single-encoder baseline"):
        make_module(plan=None)
    baseline = make_module(aux=None, plan=None)
    assert baseline.aux is None and baseline.plan == FusionPlan("regions", task="semantic")
    FusionPlan(**{**FUSED_PLAN, "strides": (32,)}).save(tmp_path / "plan.json")
    assert make_module(plan=str(tmp_path / "plan.json")).pyramid.strides == (32,)
    with pytest.raises(FileNotFoundError, match="fusionseg profile"):
        make_module(plan=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="needs thing_ids"):
        make_module("panoptic", thing_ids=None)


class SetPlanInSetup(L.Callback):
    """Stands in for the MetricProfiler: sets the plan of an `auto` module before the optimizer exists."""

    def setup(self, trainer, pl_module, stage) -> None:
        if pl_module.needs_plan:
            scores = {"ef_aux": {8: np.float32(3.5), 16: np.float64(17.25)}, "rule": "structure-led"}
            pl_module.set_plan(FusionPlan("regions", "edges", strides=(16,), scores=scores))


def test_checkpoints_restore_the_exact_fused_model(tmp_path) -> None:
    weights = tmp_path / "regions.safetensors"
    save_file(build("regions", channels=32, seed=3).state_dict(), str(weights))
    module = make_module(master={"name": "regions", "args": {"channels": 32, "weights": str(weights)}}, plan="auto")
    fit = trainer(max_steps=3, callbacks=[SetPlanInSetup()], default_root_dir=tmp_path)
    fit.fit(module, loader(train_batch("semantic"), 3))
    ckpt = tmp_path / "model.ckpt"
    fit.save_checkpoint(ckpt)
    weights.unlink()  # the checkpoint brings the weights: no weight file, no profiling needed
    stored = torch.load(ckpt, weights_only=True)
    assert stored["hyper_parameters"]["plan"]["scores"]["ef_aux"] == {8: 3.5, 16: 17.25}  # the plan, stored once
    assert "fusion_plan" not in stored

    batch = eval_batch("semantic")
    module.eval()
    with torch.no_grad():
        expected = module(batch.images)
    loaded = FusedSegModule.load_from_checkpoint(ckpt).eval()
    assert loaded.plan == module.plan and loaded.pyramid.strides == (16,)
    with torch.no_grad():
        assert torch.equal(loaded(batch.images).mask_logits, expected.mask_logits)

    fresh = make_module(plan="auto", pretrained=False)
    predicted = trainer().predict(fresh, loader(batch), ckpt_path=ckpt)[0]
    reference = [p.semantic for p in module.predict_step(batch)]
    assert all(torch.equal(p.semantic, r) for p, r in zip(predicted, reference))

    resumed = make_module(plan="auto", pretrained=False)
    again = trainer(max_steps=5)
    again.fit(resumed, loader(train_batch("semantic"), 5), ckpt_path=ckpt)
    assert again.global_step == 5 and resumed.plan == module.plan


def test_checkpoints_of_older_versions_with_a_separate_plan_key_still_load(tmp_path) -> None:
    module = make_module()
    fit = trainer(max_steps=1)
    fit.fit(module, loader(train_batch("semantic"), 1))
    fit.save_checkpoint(tmp_path / "new.ckpt")
    old = torch.load(tmp_path / "new.ckpt", weights_only=True)
    old["fusion_plan"] = old["hyper_parameters"]["plan"]  # where older versions kept it (besides the hparams)
    old["hyper_parameters"]["plan"] = "auto"
    torch.save(old, tmp_path / "old.ckpt")
    loaded = FusedSegModule.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.plan == module.plan and not loaded.needs_plan


def test_a_plan_with_the_roles_the_other_way_round_swaps_master_and_aux() -> None:
    module = make_module(plan="auto")  # configured: regions (32 ch) master, edges (16 ch) aux
    assert module.set_plan(FusionPlan("edges", "regions", strides=(16,)))
    assert (module.master_spec.name, module.aux_spec.name) == ("edges", "regions")
    assert module.aux.frozen and not module.master.frozen
    assert all(p.requires_grad for p in module.master.parameters() if p.is_floating_point())
    assert not any(p.requires_grad for p in module.aux.parameters())
    assert module.head.in_channels == {s: 16 for s in (4, 8, 16, 32)}  # rebuilt for the new master's width
    assert module.hparams["master"] == {"name": "edges", "args": {"channels": 16}}
    recorder = LossRecorder()
    trainer(max_steps=2, callbacks=[recorder]).fit(module, loader(train_batch("semantic"), 2))
    in_groups = {id(p) for g in module.trainer.optimizers[0].param_groups for p in g["params"]}
    assert {id(p) for p in module.master.parameters()} <= in_groups
    assert not {id(p) for p in module.aux.parameters()} & in_groups


def test_validation_logs_the_evaluators_scalars_and_shows_the_headline() -> None:
    module = make_module()
    run = trainer()
    metrics = run.validate(module, loader(eval_batch("semantic")), verbose=False)[0]
    assert any(m is module.evaluators["val"] for m in module.modules())  # a child: Lightning moves it
    assert metrics and all(k.startswith("val/") for k in metrics)
    assert "val/mIoU" in metrics and "val/boundary_mIoU" in metrics
    assert list(run.progress_bar_metrics) == ["val/mIoU"]


def test_norms_biases_and_embeddings_get_no_weight_decay() -> None:
    block = nn.ModuleDict({"conv": nn.Conv2d(3, 4, 1), "norm": nn.GroupNorm(2, 4), "emb": nn.Embedding(5, 4)})
    block.level_embed = nn.Parameter(torch.zeros(3, 4))
    decay, no_decay = split_decay([block])
    assert [tuple(p.shape) for p in decay] == [(4, 3, 1, 1)]
    assert len(no_decay) == 5  # conv bias, norm weight and bias, the embedding, level_embed
    block.conv.weight.requires_grad_(False)
    assert split_decay([block])[0] == []


@given(total=st.integers(1, 5000), warmup=st.integers(0, 5000), power=st.floats(0.5, 2.0))
def test_warmup_poly_rises_then_decays_to_zero(total: int, warmup: int, power: float) -> None:
    warmup = min(warmup, total)
    f = WarmupPoly(total, warmup, power)
    values = [f(s) for s in range(total + 1)]
    assert all(0.0 <= v <= 1.0 for v in values) and values[-1] == 0.0
    assert all(b <= a + 1e-12 for a, b in zip(values[warmup:], values[warmup + 1:]))
    if warmup:
        assert values[0] == pytest.approx(1e-3)


def test_warmup_steps_as_count_or_fraction() -> None:
    assert resolve_warmup(1500, 10_000) == 1500 and resolve_warmup(0.1, 10_000) == 1000
    with pytest.warns(UserWarning, match="exceeds"):
        assert resolve_warmup(1500, 100) == 100
    with pytest.raises(ValueError):
        resolve_warmup(-1, 100)


def test_the_evaluation_rules_follow_the_evaluated_dataset() -> None:
    from types import SimpleNamespace

    from fusionseg.lightning_cli import _eval_rules

    assert _eval_rules(SimpleNamespace(info=SimpleNamespace(name="cityscapes"))) == "cityscapes"
    assert _eval_rules(SimpleNamespace(info=SimpleNamespace(name="coco"))) == "coco"
    module = make_module("instance", eval_rules="cityscapes")
    module.setup("validate")
    assert type(module.evaluators["val"]).__name__ == "CityscapesInstanceEvaluator"


def test_a_fine_tuned_aux_trains_at_its_own_rate_and_the_default_leaves_it_bit_identical() -> None:
    with pytest.raises(ValueError, match="freeze_aux=False"):
        make_module(aux_lr_mult=0.5)
    frozen, tuned = make_module(), make_module(freeze_aux=False, aux_lr_mult=0.5)
    before = {name: {k: v.clone() for k, v in m.aux.state_dict().items()} for name, m in
              (("frozen", frozen), ("tuned", tuned))}
    for module in (frozen, tuned):
        trainer(max_steps=3).fit(module, loader(train_batch("semantic"), 3))
    assert all(torch.equal(v, before["frozen"][k]) for k, v in frozen.aux.state_dict().items())
    assert any(not torch.equal(v, before["tuned"][k]) for k, v in tuned.aux.state_dict().items())
    groups = {g["name"]: g for g in tuned.trainer.optimizers[0].param_groups}
    assert groups["aux"]["initial_lr"] == pytest.approx(3e-3 * 0.5)
    assert {id(p) for p in tuned.aux.parameters()} <= {id(p) for g in groups.values() for p in g["params"]}
    assert not tuned.aux.frozen and tuned.aux.training == tuned.master.training  # its mode follows the model's
