"""What TensorBoard (and any other logger) receives, read back from the event files as TensorBoard reads them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import CSVLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fusionseg.callbacks.tensorboard import (
    HP_METRIC,
    TensorBoardRunLogger,
    custom_scalars_layout,
    feature_tag,
    log_image,
    log_text,
)


def read_events(log_dir: str | Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_run_logger_writes_no_epoch_chart_and_no_minus_one_hp_metric(tmp_path):
    logger = TensorBoardRunLogger(tmp_path, name="run")
    logger.log_hyperparams({"lr": 0.001})  # Lightning's call at the start of every stage
    logger.log_metrics({"train/loss": 1.5, "epoch": 0}, step=10)
    logger.log_metrics({HP_METRIC: 41.6}, step=400)
    logger.finalize("success")
    acc = read_events(logger.log_dir)
    assert set(acc.Tags()["scalars"]) == {"train/loss", HP_METRIC}
    assert [(e.step, round(e.value, 1)) for e in acc.Scalars(HP_METRIC)] == [(400, 41.6)]
    assert "_hparams_/experiment" in acc.summary_metadata  # the HParams tab lists the run, with hp_metric
    experiment = acc.summary_metadata["_hparams_/experiment"].plugin_data.content
    assert HP_METRIC.encode() in experiment


def test_layout_puts_losses_and_the_headline_metric_first_and_names_unmeasured_strides():
    layout = custom_scalars_layout((4, 8, 16, 32), headline="mIoU", excluded={32: "maps < 16 px"})
    assert list(layout)[:2] == ["Training losses", "Validation"]
    assert list(layout["Validation"])[0] == "mIoU (headline metric)"
    charts = layout["Edge Fidelity (EF), master / aux / fused"]
    assert "EF at OS 32 (not measured: maps < 16 px)" in charts
    pattern = re.compile(charts["EF at OS 16"][1][0])
    assert all(pattern.match(feature_tag("ef", role, 16)) for role in ("master", "aux", "fused"))
    assert not re.match(layout["Validation"]["all validation metrics"][1][0], "val/IoU/meadow")  # per class: not here


class _FakeTrainer:
    is_global_zero = True

    def __init__(self, loggers):
        self.loggers = loggers


def test_pictures_and_texts_reach_a_logger_without_images_as_files(tmp_path):
    csv = CSVLogger(tmp_path, name="csv")
    trainer = _FakeTrainer([csv])
    picture = np.zeros((8, 12, 3), np.uint8)
    log_image(trainer, "visuals/predictions", picture, step=200)
    log_text(trainer, "fusion/plan", "**master=regions**", step=0)
    folder = Path(csv.log_dir)
    assert (folder / "images" / "visuals_predictions" / "step_0000200.png").is_file()
    assert (folder / "text" / "fusion_plan.md").read_text() == "**master=regions**"


def test_pictures_reach_tensorboard_as_images(tmp_path):
    tb = TensorBoardRunLogger(tmp_path, name="tb")
    log_image(_FakeTrainer([tb]), "visuals/predictions", np.full((8, 12, 3), 200, np.uint8), step=5)
    tb.experiment.flush()
    image = read_events(tb.log_dir).Images("visuals/predictions")[0]
    assert (image.step, image.width, image.height) == (5, 12, 8)
