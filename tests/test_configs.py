"""Every YAML in configs/ parses (`--print_config`) with the paper's settings, and builds its model with random
weights; the baselines are one override away."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fusionseg.data import dataset_info
from fusionseg.lightning_cli import FusionSegCLI

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).parents[1]
PAPER_CONFIGS = {
    "ade20k": ("ade20k", "semantic"),
    "cityscapes_semantic": ("cityscapes", "semantic"),
    "cityscapes_instance": ("cityscapes", "instance"),
    "cityscapes_panoptic": ("cityscapes", "panoptic"),
    "coco_instance": ("coco", "instance"),
    "coco_panoptic": ("coco", "panoptic"),
    "kitti360_instance": ("kitti360", "instance"),
}

# Each paper config's schedule and augmentation, read off the recipes it follows. "M2F" is
# facebookresearch/Mask2Former configs/, "released" is the paper's code, gyc-code/metric-guided-fusion configs/;
# the released value wins where the two differ (docs/reproduce.md lists those differences).
# Keys: trainer.max_steps, data.batch_size, model.lr_schedule (+ milestones), model.warmup_steps,
# model.head.num_queries, data.crop_size/resize/scale_base/scale_range/scale_step/max_size/color_aug,
# data.eval_short_side/eval_max_size.
CITYSCAPES = dict(  # M2F cityscapes/{semantic,instance,panoptic}-segmentation/Base-Cityscapes-*.yaml (INPUT, SOLVER)
    lr_schedule="poly", warmup_steps=0,  # LR_SCHEDULER_NAME WarmupPolyLR, WARMUP_ITERS 0
    crop_size=[512, 1024], resize="short_side", scale_base=1024, scale_range=[0.5, 2.0], scale_step=0.1,
    max_size=4096, color_aug="ssd",  # MIN_SIZE_TRAIN [int(x * 0.1 * 1024) for x in range(5, 21)], MAX_SIZE_TRAIN 4096
    eval_short_side=1024, eval_max_size=2048,  # MIN_SIZE_TEST 1024, MAX_SIZE_TEST 2048
    num_queries=100,  # M2F cityscapes/*/maskformer2_R50_bs16_90k.yaml NUM_OBJECT_QUERIES
    max_steps=180000, batch_size=3,  # released cityscapes/*/VFM/maskformer2_fuse.yaml MAX_ITER, IMS_PER_BATCH (M2F: 90000, 16)
)
COCO = dict(  # M2F coco/{instance,panoptic}-segmentation/Base-COCO-*.yaml
    lr_schedule="multistep", milestones=[327778, 355092], warmup_steps=0,  # STEPS; WARMUP_FACTOR 1.0 = no warm-up
    max_steps=368750,  # MAX_ITER
    crop_size=1024, resize="lsj", scale_base=None, scale_range=[0.1, 2.0], scale_step=None, max_size=None,
    color_aug="none",  # IMAGE_SIZE 1024, MIN_SCALE 0.1, MAX_SCALE 2.0, coco_*_lsj mapper (no colour augmentation)
    eval_short_side=800, eval_max_size=1333,  # detectron2's defaults MIN_SIZE_TEST 800, MAX_SIZE_TEST 1333
    num_queries=200, batch_size=3,  # released coco/*/maskformer2_fuse.yaml NUM_OBJECT_QUERIES, IMS_PER_BATCH (M2F R50: 100, 16)
)
RECIPES = {
    "ade20k": dict(  # M2F ade20k/semantic-segmentation/Base-ADE20K-SemanticSegmentation.yaml, maskformer2_R50_bs16_160k.yaml
        max_steps=160000, batch_size=16, lr_schedule="poly", warmup_steps=0, num_queries=100,
        crop_size=512, resize="short_side", scale_base=512, scale_range=[0.5, 2.0], scale_step=0.1, max_size=2048,
        color_aug="ssd", eval_short_side=512, eval_max_size=2048,
    ),
    "cityscapes_semantic": CITYSCAPES,
    "cityscapes_instance": CITYSCAPES,
    "cityscapes_panoptic": CITYSCAPES,
    "coco_instance": COCO,
    "coco_panoptic": COCO,
    "kitti360_instance": dict(  # released cityscapes/instance-segmentation/dinoV3/maskformer2_kitti.yaml (M2F has none)
        max_steps=180000, batch_size=3, lr_schedule="poly", warmup_steps=0, num_queries=100,
        crop_size=[384, 672], resize="short_side", scale_base=376, scale_range=[1.1, 2.0], scale_step=0.1,
        max_size=1504, color_aug="ssd", eval_short_side=384, eval_max_size=752,
    ),
}
MODEL_KEYS = ("lr_schedule", "milestones", "warmup_steps")
DATA_KEYS = ("batch_size", "crop_size", "resize", "scale_base", "scale_range", "scale_step", "max_size", "color_aug",
             "eval_short_side", "eval_max_size")
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
    dataset, task = PAPER_CONFIGS[name]
    config = printed_config(name, capsys)
    model, data, trainer = config["model"], config["data"], config["trainer"]
    assert model["master"] == {"name": "dinov3",
                               "args": {"size": "base", "weights": "/weights/dinov3_vitb16_pretrain_lvd1689m.pth"}}
    # The paper's features and alignment: SAM2's Hiera trunk, the released code's parameter-free selection.
    assert model["aux"] == {"name": "sam2", "args": {"size": "base_plus", "weights": "/weights/sam2.1_hiera_base_plus.pt",
                                                     "features": "trunk"}}
    assert model["align"] == "sample"
    assert model["plan"] == "auto" and model["freeze_master"] is False and model["mode"] == "replace"
    # Mask2Former everywhere: AdamW 1e-4, weight decay 0.05, backbone x0.1, poly power 0.9, clip 0.01 (full model), AMP.
    assert (model["lr"], model["weight_decay"], model["backbone_lr_mult"], model["poly_power"]) == (1e-4, 0.05, 0.1, 0.9)
    assert (data["dataset"], data["task"]) == (dataset, task) and data["root"].startswith("/data/")
    assert trainer["precision"] == "bf16-mixed" and trainer["gradient_clip_val"] == 0.01
    assert trainer["gradient_clip_algorithm"] == "norm"
    assert trainer["default_root_dir"] == f"runs/{name}"
    # The label space comes from the data module, linked into the model.
    info = dataset_info(dataset, task)
    assert "num_classes" not in model or model["num_classes"] in (None, info.num_classes)


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_builds_its_model_with_random_weights(name):
    dataset, task = PAPER_CONFIGS[name]
    queries = RECIPES[name]["num_queries"]
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
    assert cli.trainer.gradient_clip_val == 0.01 and cli.trainer.max_steps == RECIPES[name]["max_steps"]
    assert module.hparams.align == "sample" and module.aux.features == "trunk"
    crop = RECIPES[name]["crop_size"]
    assert cli.datamodule.train_transform.crop_size == ((crop, crop) if isinstance(crop, int) else tuple(crop))


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_follows_its_recipe_table(name, capsys):
    config = printed_config(name, capsys)
    model, data, trainer = config["model"], config["data"], config["trainer"]
    recipe = RECIPES[name]
    found = {"max_steps": trainer["max_steps"], "num_queries": model["head"]["num_queries"]}
    found |= {k: model[k] for k in MODEL_KEYS}
    found |= {k: data[k] for k in DATA_KEYS}
    expected = {"milestones": None} | recipe
    assert {k: found[k] for k in expected} == expected


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
