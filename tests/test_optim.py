"""Learning-rate schedules: Mask2Former's multi-step decay for COCO and poly decay elsewhere, as LambdaLR factors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fusionseg.optim import WarmupMultiStep, WarmupPoly, build_schedule


def test_coco_multistep_decays_tenfold_at_mask2formers_iterations() -> None:
    # Mask2Former configs/coco/*/Base-COCO-*.yaml: STEPS (327778, 355092), MAX_ITER 368750, GAMMA 0.1 (detectron2's default)
    f = build_schedule("multistep", 368750, milestones=[327778, 355092])
    assert isinstance(f, WarmupMultiStep)
    assert f(0) == 1.0 and f(327777) == 1.0
    assert f(327778) == pytest.approx(0.1) and f(355091) == pytest.approx(0.1)
    assert f(355092) == pytest.approx(0.01) and f(368749) == pytest.approx(0.01)


def test_milestones_as_fractions_follow_a_shorter_run() -> None:
    f = build_schedule("multistep", 1000, milestones=[327778 / 368750, 355092 / 368750])
    assert f.milestones == [889, 963]


def test_a_scheduler_steps_the_optimizer_learning_rate() -> None:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, build_schedule("multistep", 10, milestones=[3, 6], gamma=0.5))
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-4] * 3 + [5e-5] * 3 + [2.5e-5] * 2)
    # The factor is a plain object: the scheduler's state (and a checkpoint) holds it.
    assert sched.state_dict()["lr_lambdas"][0]["milestones"] == [3, 6]


@given(total=st.integers(10, 5000), warmup=st.integers(0, 9), gamma=st.floats(0.01, 0.9))
def test_multistep_never_rises_after_warmup(total: int, warmup: int, gamma: float) -> None:
    f = build_schedule("multistep", total, warmup, milestones=[total // 2, total - 1], gamma=gamma)
    values = [f(s) for s in range(warmup, total + 1)]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(gamma**2)


def test_poly_is_the_warmup_poly_factor() -> None:
    f = build_schedule("poly", 90000, power=0.9)
    assert isinstance(f, WarmupPoly) and f(0) == 1.0 and f(45000) == pytest.approx(0.5**0.9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "multistep"}, r"needs milestones \(Mask2Former's COCO: \[327778, 355092\]\)"),
        ({"kind": "poly", "milestones": [5]}, "belong to lr_schedule 'multistep'"),
        ({"kind": "multistep", "milestones": [50, 20]}, "must be increasing"),
        ({"kind": "cosine"}, "must be 'poly' or 'multistep'"),
    ],
)
def test_bad_schedules_are_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_schedule(total_steps=100, **kwargs)


def test_a_milestone_past_the_end_warns() -> None:
    with pytest.warns(UserWarning, match="beyond the 100 optimizer steps"):
        build_schedule("multistep", 100, milestones=[327778])


@pytest.mark.filterwarnings("ignore:.*does not have many workers", "ignore:.*module\\(s\\) in eval mode")
def test_the_module_steps_its_learning_rate_by_lr_schedule() -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from fusionseg.heads import HeadConfig
    from fusionseg.module import FusedSegModule
    from fusionseg.structures import SegBatch, SegTarget

    head = HeadConfig(num_queries=4, dec_layers=1, hidden_dim=32, train_points=64, enc_layers=1, num_heads=2,
                      dim_feedforward=16, enc_feedforward=16)
    module = FusedSegModule("regions:channels=16", None, plan=None, num_classes=2, head=head, lr=1e-3, warmup_steps=0,
                            lr_schedule="multistep", milestones=[2, 4], gamma=0.5)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :32], masks[1, 32:] = True, True
    target = SegTarget(masks=masks, labels=torch.tensor([0, 1]))
    batch = SegBatch(torch.rand(2, 3, 64, 64), [target, target], [(64, 64)] * 2, [(64, 64)] * 2, ["a", "b"])
    seen: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(trainer.optimizers[0].param_groups[-1]["lr"])

    L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[Record()]).fit(
        module, DataLoader([batch] * 6, batch_size=None, collate_fn=lambda b: b))
    assert seen == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
