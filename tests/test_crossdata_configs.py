"""The synthetic-to-Cityscapes configs (Table 3, ViT-L) parse with the paper's encoders, train on the synthetic
source and evaluate on Cityscapes val, and build their model in Cityscapes' instance label space."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fusionseg.data import dataset_info
from fusionseg.lightning_cli import FusionSegCLI

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).parents[1]
CROSS_CONFIGS = {"synscapes_to_cityscapes_instance": "synscapes", "urbansyn_to_cityscapes_instance": "urbansyn"}


def printed_config(name: str, capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as done:
        FusionSegCLI(args=["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(CROSS_CONFIGS))
def test_cross_config_trains_on_the_source_and_validates_on_cityscapes(name, capsys) -> None:
    config = printed_config(name, capsys)
    model, data, trainer = config["model"], config["data"], config["trainer"]
    assert model["master"] == {"name": "dinov3",
                               "args": {"size": "large", "weights": "/weights/dinov3_vitl16_pretrain_lvd1689m.pth"}}
    assert model["aux"] == {"name": "sam2", "args": {"size": "large", "weights": "/weights/sam2.1_hiera_large.pt",
                                                     "features": "trunk"}}
    assert model["plan"] == "auto" and model["freeze_master"] is False
    assert (data["dataset"], data["root"], data["train_split"]) == (CROSS_CONFIGS[name], f"/data/{CROSS_CONFIGS[name]}",
                                                                    "train")
    assert (data["val_dataset"], data["val_root"], data["val_split"], data["task"]) == (
        "cityscapes", "/data/cityscapes", "val", "instance")
    # The released code's UDA schedule: batch 3, 180k (see the config's comment), Mask2Former's optimizer.
    assert (trainer["max_steps"], data["batch_size"], model["lr"], model["warmup_steps"]) == (180000, 3, 1e-4, 0)
    assert (data["eval_short_side"], data["eval_max_size"], model["align"]) == (1024, 2048, "sample")
    assert trainer["default_root_dir"] == f"runs/{name}"


@pytest.mark.parametrize("name", sorted(CROSS_CONFIGS))
def test_cross_config_builds_its_model_in_cityscapes_label_space(name) -> None:
    small = ["--model.master", "dinov3:size=small", "--model.aux", "sam2:size=tiny", "--trainer.logger", "false"]
    cli = FusionSegCLI(args=["--config", str(REPO / "configs" / f"{name}.yaml"), *small], run=False)
    info = dataset_info("cityscapes", "instance")
    assert cli.datamodule.info.name == "cityscapes" and cli.datamodule.train_info.name == CROSS_CONFIGS[name]
    assert (cli.model.task, cli.model.num_classes, cli.model.class_names) == ("instance", 8, list(info.class_names))
    assert cli.model.hparams.eval_rules == "cityscapes"
