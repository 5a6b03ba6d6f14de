"""`fusionseg fit --config configs/demo.yaml` end to end on CPU, shrunk to a few steps: the profiler sets a
plan, TensorBoard holds the promised summaries, checkpoints are written, `validate` and `predict` run from
them, and a second run reads the profiles from the cache."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from fusionseg.callbacks import MetricProfiler, SegPredictionWriter
from fusionseg.lightning_cli import run_lightning_cli

REPO = Path(__file__).parents[1]

# A tiny model on 64 px synthetic images; everything else as configs/demo.yaml has it.
SMALL = [
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--data.crop_size", "64", "--data.batch_size", "2", "--data.eval_batch_size", "2", "--data.num_workers", "0",
    "--data.synthetic_train_images", "16", "--data.synthetic_val_images", "2", "--data.synthetic_image_size", "64",
    "--model.head.num_queries", "8", "--model.head.dec_layers", "2", "--model.head.enc_layers", "1", "--model.head.hidden_dim", "32",
    "--model.head.dim_feedforward", "64", "--model.head.enc_feedforward", "64", "--model.head.train_points", "256",
    "--model.master", "regions:channels=16", "--model.aux", "edges:channels=16",
    "--metric_profiler.num_batches", "2", "--visuals.num_images", "2",
]


def fit_args(root: Path, cache: Path, steps: int = 4) -> list[str]:
    return ["fit", "--config", "configs/demo.yaml", "--trainer.default_root_dir", str(root),
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--trainer.log_every_n_steps", "1", "--last_checkpoint.every_n_train_steps", "3",
            "--metric_profiler.cache_dir", str(cache), *SMALL]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One short demo run shared by the tests of this file."""
    faiss.omp_set_num_threads(1)
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        cli = run_lightning_cli(fit_args(root / "run", root / "cache"))
    return root, cli


def _summaries(log_dir: Path) -> tuple[EventAccumulator, set[str]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    plugins = set()
    for path in log_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                plugins.add(value.metadata.plugin_data.plugin_name)
    return acc, plugins


def test_fit_profiles_sets_a_plan_and_checkpoints(demo_run):
    root, cli = demo_run
    module, profiler = cli.model, cli._callback(MetricProfiler)
    assert module.plan is not None and module.plan.master == "regions" and module.plan.aux == "edges"
    assert module.plan.strides[0] in (4, 8, 16, 32)
    assert profiler.plan == module.plan.to_dict()
    assert {r: p["from_cache"] for r, p in profiler.profiles.items()} == {"master": False, "aux": False}
    assert len(profiler.profiles["aux"]["values"][16]["ef"]) == 4  # 2 batches of 2 images
    assert cli.trainer.global_step == 4
    last = root / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["hyper_parameters"]["plan"] == module.plan.to_dict()
    assert list((root / "run" / "checkpoints").glob("best-step=4*.ckpt"))


def test_tensorboard_holds_losses_metrics_profiles_images_text_and_layout(demo_run):
    root, _ = demo_run
    log_dir = next((root / "run" / "lightning_logs").glob("version_*"))
    acc, plugins = _summaries(log_dir)
    scalars = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/loss_ce", "train/loss_mask", "train/loss_dice", "val/mIoU", "val/boundary_mIoU"):
        assert tag in scalars, tag
    assert any(t.startswith("lr-AdamW") for t in scalars)
    # SC/EF of each role's features in a run of its own (one coloured line per role in a chart). On 64 px
    # validation images the OS 8-32 maps are 8, 4 and 2 px: not measured rather than scored 0.
    for role in ("master", "aux", "fused"):
        role_acc, _ = _summaries(log_dir / role)
        assert set(role_acc.Tags()["scalars"]) == {"features/sc/os4", "features/ef/os4"}, role
        assert [e.step for e in role_acc.Scalars("features/ef/os4")] == [0, 4]  # start, then each validation
    images = set(acc.Tags()["images"])
    assert {"fusion/profile", "visuals/predictions", "visuals/pca/master", "visuals/pca/aux",
            "visuals/pca/fused"} <= images
    assert acc.Images("visuals/predictions")[0].height > 0
    tensors = set(acc.Tags()["tensors"])
    assert "fusion/plan/text_summary" in tensors and "custom_scalars__config__" in tensors
    text = acc.Tensors("fusion/plan/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "master=regions" in text and "ef_peak" in text and "| encoder | role | metric | OS 4" in text
    assert not any(t.startswith("profile/") for t in scalars)  # a table, not 80 single-point charts
    assert "hparams" in plugins


def test_validate_from_the_checkpoint_prints_the_results_table(demo_run, capsys):
    root, cli = demo_run
    last = root / "run" / "checkpoints" / "last.ckpt"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        val = run_lightning_cli(["validate", "--config", "configs/demo.yaml", "--trainer.default_root_dir",
                                 str(root / "run"), "--ckpt_path", str(last), *SMALL])
    assert val.model.plan == cli.model.plan  # from the checkpoint, not profiled again
    assert val._callback(MetricProfiler).profiles == cli._callback(MetricProfiler).profiles  # restored with it
    assert "val/mIoU" in val.trainer.callback_metrics
    out = capsys.readouterr()
    assert "| mIoU | boundary mIoU |" in out.out + out.err


def test_validate_without_a_checkpoint_profiles_on_validation_images(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        val = run_lightning_cli(["validate", "--config", "configs/demo.yaml", "--trainer.default_root_dir",
                                 str(tmp_path), "--metric_profiler.cache_dir", str(tmp_path / "cache"),
                                 "--metric_profiler.num_batches", "1", *SMALL])
    profiler = val._callback(MetricProfiler)
    assert val.model.plan is not None and profiler.plan == val.model.plan.to_dict()
    assert len(profiler.profiles["master"]["values"][4]["sc"]) == 2  # one validation batch of two
    assert "val/mIoU" in val.trainer.callback_metrics


def test_predict_on_a_folder_writes_label_pngs_and_overlays(demo_run):
    root, cli = demo_run
    images = root / "photos"
    (images / "street").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / "street" / "b.jpg")
    out = root / "predicted"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        pred = run_lightning_cli(["predict", "--config", "configs/demo.yaml", "--trainer.default_root_dir",
                                  str(root / "run"), "--ckpt_path", str(root / "run" / "checkpoints" / "last.ckpt"),
                                  "--data.predict_root", str(images), "--prediction_writer.output_dir", str(out),
                                  *SMALL])
    assert pred.model.plan == cli.model.plan
    written = {p.relative_to(out).as_posix() for p in pred._callback(SegPredictionWriter).written}
    assert written == {"labels/a.png", "labels/street/b.png", "overlays/a.png", "overlays/street/b.png"}
    label = np.asarray(Image.open(out / "labels" / "a.png"))
    assert label.shape == (50, 70) and label.dtype == np.uint8 and label.max() < 10
    assert np.asarray(Image.open(out / "overlays" / "street" / "b.png")).shape == (40, 40, 3)


def test_a_second_run_with_the_same_encoders_reads_the_profiles_from_the_cache(demo_run):
    root, cli = demo_run
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        again = run_lightning_cli(fit_args(root / "again", root / "cache", steps=1)
                                  + ["--visuals.feature_metrics", "false", "--visuals.pca_maps", "false"])
    profiler = again._callback(MetricProfiler)
    assert {r: p["from_cache"] for r, p in profiler.profiles.items()} == {"master": True, "aux": True}
    first = cli._callback(MetricProfiler).profiles
    assert profiler.profiles["aux"]["values"] == first["aux"]["values"]
    assert again.model.plan == cli.model.plan


def test_a_run_without_a_logger_still_profiles_trains_and_checkpoints(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        cli = run_lightning_cli(fit_args(tmp_path / "run", tmp_path / "cache", steps=1) + ["--trainer.logger", "false"])
    assert cli.trainer.global_step == 1 and cli.model.plan is not None
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_fit_with_the_roles_swapped_in_the_config_ends_with_the_metrics_roles(tmp_path):
    swapped = ["--model.master", "edges:channels=16", "--model.aux", "regions:channels=16", "--trainer.logger", "false",
               "--visuals.feature_metrics", "false", "--visuals.pca_maps", "false"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        cli = run_lightning_cli(fit_args(tmp_path / "run", tmp_path / "cache", steps=1) + swapped)
    module = cli.model
    assert (module.plan.master, module.plan.aux) == ("regions", "edges")  # structure-strong regions trains
    assert module.master_spec.name == "regions" and module.aux.frozen and not module.master.frozen
    assert "swapped" in module.plan.scores["roles"]
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert (saved["master"]["name"], saved["aux"]["name"]) == ("regions", "edges")
