"""What TensorBoard (and any other logger) receives, read back from the event files as TensorBoard reads them."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import faiss
import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from fusionseg.callbacks.tensorboard import (
    HP_METRIC,
    TensorBoardRunLogger,
    custom_scalars_layout,
    feature_run_tag,
    feature_tag,
    log_image,
    log_text,
)
from fusionseg.lightning_cli import run_lightning_cli

REPO = Path(__file__).parents[1]


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
    layout = custom_scalars_layout((4, 8, 16, 32), headline="mIoU", excluded={32: "maps 4 px < 16 px"})
    assert list(layout)[:2] == ["Training losses", "Validation"]
    assert list(layout["Validation"])[0] == "mIoU (headline metric)"
    charts = layout["Edge Fidelity (EF), master / aux / fused (not measured at OS 32: maps 4 px < 16 px)"]
    assert list(charts) == ["EF at OS 4", "EF at OS 8", "EF at OS 16"]  # no empty chart for OS 32
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


# -- a whole run, read back as TensorBoard and a terminal show it ------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """fit (4 steps, validations at 2 and 4, 128 px validation images) then predict, as the demo config runs."""
    faiss.omp_set_num_threads(1)
    root = tmp_path_factory.mktemp("view")
    args = ["--config", "configs/demo.yaml", "--trainer.default_root_dir", str(root / "run"),
            "--data.crop_size", "64", "--data.batch_size", "2", "--data.eval_batch_size", "2", "--data.num_workers", "0",
            "--data.synthetic_train_images", "8", "--data.synthetic_val_images", "2",
            "--data.synthetic_image_size", "128", "--model.head.num_queries", "4", "--model.head.dec_layers", "1",
            "--model.head.enc_layers", "1", "--model.head.hidden_dim", "32", "--model.head.dim_feedforward", "32",
            "--model.head.enc_feedforward", "32", "--model.head.train_points", "128",
            "--model.master", "regions:channels=16", "--model.aux", "edges:channels=16",
            "--metric_profiler.num_batches", "1", "--metric_profiler.cache_dir", str(root / "cache"),
            "--visuals.num_images", "2", "--trainer.enable_progress_bar", "false"]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.chdir(REPO)
        cli = run_lightning_cli(["fit", *args, "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
                                 "--trainer.log_every_n_steps", "1", "--last_checkpoint.every_n_train_steps", "2"])
        photos = root / "photos"
        photos.mkdir()
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(photos / "a.png")
        run_lightning_cli(["predict", *args, "--ckpt_path", str(root / "run" / "checkpoints" / "last.ckpt"),
                           "--data.predict_root", str(photos)])
    return root / "run", cli, out.getvalue()


@pytest.mark.slow
def test_scalars_hold_losses_metrics_and_features_without_noise(small_run):
    run, cli, _ = small_run
    versions = sorted(p.name for p in (run / "lightning_logs").iterdir())
    assert versions == ["version_0"]  # predict made no empty run
    acc = read_events(run / "lightning_logs" / "version_0")
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_ce", "val/mIoU", "val/boundary_mIoU", HP_METRIC} <= scalars
    assert "epoch" not in scalars and not any(t.startswith("profile/") for t in scalars)
    # Features: each role a run of its own, so a chart draws master, aux and fused as three named lines.
    # On 128 px images the OS 4 and 8 maps are 32 and 16 px (measured), OS 16 and 32 are not.
    assert not any(t.startswith("features/") for t in scalars)
    for role in ("master", "aux", "fused"):
        role_scalars = read_events(run / "lightning_logs" / "version_0" / role).Tags()["scalars"]
        assert sorted(role_scalars) == sorted(feature_run_tag(m, s) for m in ("sc", "ef") for s in (4, 8)), role
    # hp_metric is the best val/mIoU so far, after each validation (at steps 2 and 4, as the pictures; Lightning
    # logs val/* one step earlier); no -1 placeholder.
    miou = [e.value for e in acc.Scalars("val/mIoU")]
    assert [e.step for e in acc.Scalars(HP_METRIC)] == [2, 4] and len(miou) == 2
    assert [round(e.value, 4) for e in acc.Scalars(HP_METRIC)] == [round(miou[0], 4), round(max(miou), 4)]


@pytest.mark.slow
def test_custom_scalars_charts_name_every_series_they_draw(small_run):
    run, _, _ = small_run
    acc = read_events(run / "lightning_logs" / "version_0")
    config = layout_pb2.Layout()
    config.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    categories = [c.title for c in config.category]
    assert categories[:3] == ["Training losses", "Validation", "Learning rates"]
    charts = {chart.title: list(chart.multiline.tag) for c in config.category for chart in c.chart}
    assert list(charts)[:6] == ["total loss", "class loss (loss_ce)", "mask loss (loss_mask)", "dice loss (loss_dice)",
                                "mIoU (headline metric)", "boundary mIoU"]
    # TensorBoard colours lines by run: the series of a chart are (run, tag) pairs, named by the run.
    runs = {"": read_events(run / "lightning_logs" / "version_0")}
    runs |= {role: read_events(run / "lightning_logs" / "version_0" / role) for role in ("master", "aux", "fused")}
    series = {title: sorted((name, t) for name, events in runs.items() for t in events.Tags()["scalars"]
                            if any(re.match(p, t) for p in patterns)) for title, patterns in charts.items()}
    assert series["EF at OS 8"] == [("aux", "features/ef/os8"), ("fused", "features/ef/os8"),
                                    ("master", "features/ef/os8")]
    assert "SC at OS 16" not in series  # not measured: no chart, rather than a 0 or an empty one
    assert any(c.endswith("(not measured at OS 16, OS 32: maps 8 px < 16 px; maps 4 px < 16 px)") for c in categories)
    assert series["master (backbone)"] == [("", "lr-AdamW/backbone")]
    assert series["total loss"] == [("", "train/loss")] and series["mIoU (headline metric)"] == [("", "val/mIoU")]
    assert all(len(lines) <= 1 for title, lines in series.items() if not title.startswith(("SC", "EF")))


@pytest.mark.slow
def test_images_are_titled_grids_and_the_plan_a_table(small_run):
    run, _, _ = small_run
    acc = read_events(run / "lightning_logs" / "version_0")
    images = {tag: acc.Images(tag) for tag in acc.Tags()["images"]}
    assert set(images) == {"fusion/profile", "visuals/predictions", "visuals/pca/master", "visuals/pca/aux",
                           "visuals/pca/fused"}
    assert [e.step for e in images["visuals/predictions"]] == [0, 2, 4]
    # Grids about as wide as TensorBoard's image cards (which shrink wider pictures and their text):
    # two rows of 128 px and three columns of predictions; the image and four strides at 96 px of PCA maps;
    # each with title, column titles and legend or notes.
    grid = images["visuals/predictions"][-1]
    assert 3 * 128 <= grid.width < 3 * 128 + 60 and 2 * 128 + 60 < grid.height < 2 * 128 + 220
    pca = images["visuals/pca/fused"][-1]
    assert 5 * 96 <= pca.width < 5 * 96 + 80 and pca.height > 2 * 96
    profile = images["fusion/profile"][0]  # SC above EF, legend below
    assert (profile.width, profile.height) == (600, 940)
    text = acc.Tensors("fusion/plan/text_summary")[0].tensor_proto.string_val[0].decode()
    # Profiled on the 64 px training crops: only the OS 4 maps (16 px) are large enough for the plan.
    assert "| encoder | role | metric | OS 4 | OS 8 (not used) | OS 16 (not used) | OS 32 (not used) |" in text


@pytest.mark.slow
def test_the_terminal_shows_the_plan_first_and_a_closing_summary_with_paths(small_run):
    run, cli, out = small_run
    assert out.index("Fusion plan: master=regions aux=edges") < out.index("Model: ") < out.index("fit finished at step 4")
    assert "not used: OS 8 (maps 8 px < 16 px)" in out  # the 64 px training crops, profiled
    best = next((run / "checkpoints").glob("best-step=*-mIoU=*.ckpt"))
    assert f"best " in out and str(best) in out and str(run / "checkpoints" / "last.ckpt") in out
    assert "| class" in out and "| meadow" in out  # the per-class table
    assert str(run / "lightning_logs" / "version_0") in out and str(run / "profile") in out
    assert {p.name for p in (run / "profile").iterdir()} == {"profile.json", "plan.json", "profile.png"}
    assert f"Next: fusionseg validate --config configs/demo.yaml --ckpt_path {best}" in out
    assert "predict: wrote 1 images to" in out and "class ids as palette PNGs" in out
