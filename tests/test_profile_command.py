"""`fusionseg profile` end to end: image folders, dataset configs, outputs, errors."""

from __future__ import annotations

import json
import shutil

import pytest

from fusionseg.cli import main as fusionseg_main
from fusionseg.commands.profile import list_images, main, sample_images_dir
from fusionseg.heads import HeadConfig
from fusionseg.module import FusedSegModule
from fusionseg.plan import FusionPlan
from fusionseg.profiling import Profile


@pytest.fixture
def two_photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in list_images(sample_images_dir())[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_profile_command_writes_every_output(two_photos, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["profile", "--encoders", "edges", "regions:channels=16", "--images", str(two_photos),
            "--num-images", "2", "--image-size", "96", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert fusionseg_main(argv) == 0
    for name in ("profile.json", "profile.csv", "plan.json", "profile.png"):
        assert (out / name).is_file(), name
    # One contact sheet per encoder (two images x four strides x PCA and edges on it), no loose maps.
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["edges.png", "regions.png"]
    profile = Profile.load_json(out / "profile.json")
    assert profile == Profile.load_csv(out / "profile.csv")
    assert set(profile.encoders) == {"edges", "regions"} and profile.num_images("edges") == 2
    plan = FusionPlan.load(out / "plan.json")
    assert {plan.master, plan.aux} == {"edges", "regions"} and plan.task == "semantic"
    printed = capsys.readouterr().out
    assert "OS 4" in printed and "OS 32" in printed and "plan: master=" in printed


def test_profile_command_uses_the_sample_photographs_by_default(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--encoders", "edges:channels=8", "--num-images", "1", "--image-size", "64", "--out", str(out),
                 "--num-maps", "0", "--no-progress", "--task", "edge"]) == 0
    assert str(sample_images_dir()) in capsys.readouterr().out
    assert Profile.load_json(out / "profile.json").encoders == ["edges"]
    assert not (out / "plan.json").exists()  # one encoder: nothing to fuse


def test_missing_or_empty_image_folder_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--images", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no images in" in err and "*.jpg, *.jpeg, *.png" in err
    assert main(["--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_encoder_is_a_clear_error(two_photos, tmp_path, capsys):
    assert main(["--encoders", "nope", "--images", str(two_photos), "--out", str(tmp_path / "o")]) == 2
    assert "unknown encoder 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_plan_of_two_encoders_of_one_family_is_accepted_by_the_module_as_given(two_photos, tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    from test_module import train_batch

    out = tmp_path / "out"
    specs = ["timm:model_name=resnet18", "timm:model_name=convnext_atto"]
    assert main(["--encoders", *specs, "--images", str(two_photos), "--num-images", "2", "--image-size", "64",
                 "--out", str(out), "--num-maps", "1", "--no-progress", "--plan-metric", "ef_cc"]) == 0
    plan = FusionPlan.load(out / "plan.json")
    assert {plan.master, plan.aux} == set(specs) and plan.scores["plan_metric"] == "ef_cc"
    assert (out / "maps" / "timm-model_name-resnet18.png").is_file()
    head = HeadConfig(num_queries=4, dec_layers=1, hidden_dim=32, train_points=64, enc_layers=1, num_heads=2,
                      dim_feedforward=32, enc_feedforward=32)
    # The configuration may give the roles either way round: the plan's roles win.
    module = FusedSegModule(master=specs[1], aux=specs[0], plan=str(out / "plan.json"), num_classes=3, head=head,
                            warmup_steps=0)
    assert str(module.master_spec) == plan.master and module.plan == plan
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader([train_batch("semantic")], batch_size=None, collate_fn=lambda b: b))
    assert trainer.global_step == 1


@pytest.mark.parametrize("form", ["class_path", "init_args"])
def test_profile_command_draws_images_from_a_dataset_config(tmp_path, form):
    args = {"dataset": "synthetic", "synthetic_val_images": 2, "synthetic_image_size": 64, "num_workers": 0}
    config = {"data": {"class_path": "fusionseg.data.SegDataModule", "init_args": args}} if form == "class_path" else args
    path = tmp_path / "data.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    out = tmp_path / "out"
    assert main(["--data", str(path), "--num-images", "2", "--image-size", "64", "--out", str(out),
                 "--num-maps", "1", "--no-progress"]) == 0
    assert Profile.load_json(out / "profile.json").num_images("regions") == 2
    assert (out / "maps" / "regions.png").is_file()
