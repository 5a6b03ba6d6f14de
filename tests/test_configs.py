"""Every YAML in configs/ parses (`--print_config`) with the paper's settings, and builds its model with random
weights; the baselines are one override away."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fusionseg.data import dataset_info
from fusionseg.lightning_cli import FusionSegCLI

REPO = Path(__file__).parents[1]
PAPER_CONFIGS = {
    "ade20k": ("ade20k", "semantic", 100),
    "cityscapes_semantic": ("cityscapes", "semantic", 100),
    "cityscapes_instance": ("cityscapes", "instance", 100),
    "cityscapes_panoptic": ("cityscapes", "panoptic", 100),
    "coco_instance": ("coco", "instance", 200),
    "coco_panoptic": ("coco", "panoptic", 100),
    "kitti360_instance": ("kitti360", "instance", 100),
}
# Random weights: the encoders without their weight files. The paper's sizes are built for one config; the
# others build with the smallest sizes of the same encoders, which checks the rest of the config for less time.
RANDOM_WEIGHTS = ["--model.master", "dinov3:size=base", "--model.aux", "sam2:size=base_plus"]
SMALL_RANDOM_WEIGHTS = ["--model.master", "dinov3:size=small", "--model.aux", "sam2:size=tiny"]


def test_the_configs_folder_holds_the_paper_settings_and_the_demo():
    cross_dataset = {"synscapes_to_cityscapes_instance", "urbansyn_to_cityscapes_instance"}  # test_crossdata_configs.py
    assert {p.stem for p in (REPO / "configs").glob("*.yaml")} == {*PAPER_CONFIGS, *cross_dataset, "demo"}


def printed_config(name: str, capsys, *extra: str) -> dict:
    with pytest.raises(SystemExit) as done:
        FusionSegCLI(args=["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), *extra, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_parses_with_the_paper_setting(name, capsys):
    dataset, task, queries = PAPER_CONFIGS[name]
    config = printed_config(name, capsys)
    model, data, trainer = config["model"], config["data"], config["trainer"]
    assert model["master"] == {"name": "dinov3",
                               "args": {"size": "base", "weights": "/weights/dinov3_vitb16_pretrain_lvd1689m.pth"}}
    assert model["aux"] == {"name": "sam2", "args": {"size": "base_plus", "weights": "/weights/sam2.1_hiera_base_plus.pt"}}
    assert model["plan"] == "auto" and model["freeze_master"] is False and model["mode"] == "replace"
    assert (model["lr"], model["weight_decay"], model["backbone_lr_mult"]) == (1e-4, 0.05, 0.1)
    assert model["head"]["num_queries"] == queries
    assert (data["dataset"], data["task"]) == (dataset, task) and data["root"].startswith("/data/")
    assert data["batch_size"] == 16
    assert trainer["precision"] == "bf16-mixed" and trainer["gradient_clip_val"] == 0.01
    assert trainer["max_steps"] == {"ade20k": 160000, "cityscapes": 90000, "coco": 368750, "kitti360": 90000}[dataset]
    assert trainer["default_root_dir"] == f"runs/{name}"
    # The label space comes from the data module, linked into the model.
    info = dataset_info(dataset, task)
    assert "num_classes" not in model or model["num_classes"] in (None, info.num_classes)


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_builds_its_model_with_random_weights(name):
    dataset, task, queries = PAPER_CONFIGS[name]
    encoders = RANDOM_WEIGHTS if name == "ade20k" else SMALL_RANDOM_WEIGHTS
    cli = FusionSegCLI(args=["--config", str(REPO / "configs" / f"{name}.yaml"), *encoders,
                             "--trainer.logger", "false"], run=False)
    module, info = cli.model, dataset_info(dataset, task)
    assert (module.task, module.num_classes) == (task, info.num_classes)
    assert module.class_names == list(info.class_names)
    assert module.needs_plan  # plan auto: the MetricProfiler decides before the first step
    assert type(module.master).__name__ == "DINOv3Encoder" and type(module.aux).__name__ == "SAM2Encoder"
    assert module.aux.frozen and not module.master.frozen
    assert module.head is not None and module.hparams.head["num_queries"] == queries
    if name == "ade20k":
        assert module.master.size == "base" and module.aux.size == "base_plus"
    if task == "panoptic":
        assert module.thing_ids == list(info.thing_ids)
    assert cli.trainer.gradient_clip_val == 0.01 and cli.trainer.max_steps > 0


def test_baselines_are_one_override_away(capsys):
    master_only = printed_config("ade20k", capsys, "--model.aux", "null", "--model.plan", "null")
    assert master_only["model"]["aux"] is None and master_only["model"]["plan"] is None
    demo = REPO / "configs" / "demo.yaml"
    cli = FusionSegCLI(args=["--config", str(demo), "--model.aux", "null", "--model.plan", "null",
                             "--trainer.logger", "false"], run=False)
    assert cli.model.aux is None and not cli.model.needs_plan and cli.model.plan.strides == ()
    fixed = FusionSegCLI(args=["--config", str(demo), "--model.plan",
                               "{master: regions, aux: edges, strides: [8], task: semantic}", "--trainer.logger", "false"],
                         run=False)
    assert fixed.model.plan.strides == (8,) and not fixed.model.needs_plan


def test_demo_config_runs_anywhere():
    cli = FusionSegCLI(args=["--config", str(REPO / "configs" / "demo.yaml"), "--trainer.logger", "false"], run=False)
    assert cli.trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    assert cli.datamodule.dataset == "synthetic" and cli.datamodule.info.num_classes == cli.model.num_classes
    assert cli.model.master_spec.name == "regions" and cli.model.aux_spec.name == "edges"
