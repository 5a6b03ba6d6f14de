"""Wrong inputs end in a message that names the file or the argument, says what it is and what was expected:
unreadable checkpoints, invalid numbers in the data settings, and COCO annotations without area (counted)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from torch import nn

from fusionseg.checkpoint_check import CheckpointError, check_checkpoint
from fusionseg.data import SegDataModule
from fusionseg.data.coco_format import InstanceAnnotations


# -- --ckpt_path ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def boring_ckpt(tmp_path_factory) -> Path:
    """A real Lightning checkpoint of a model that is not a segmentation model."""
    root = tmp_path_factory.mktemp("boring")
    trainer = Trainer(default_root_dir=root, max_steps=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
    trainer.fit(BoringModel())
    trainer.save_checkpoint(root / "boring.ckpt")
    return root / "boring.ckpt"


class _Seg(nn.Module):
    task, num_classes = "semantic", 19

    def __init__(self) -> None:
        super().__init__()
        self.master = nn.Linear(2, 2)
        self.head = nn.Linear(2, 2)


def test_a_random_file_is_named_and_called_not_a_pytorch_file(tmp_path):
    path = tmp_path / "weights.ckpt"
    path.write_bytes(os.urandom(256).replace(b"P", b"Q"))
    expected = r"--ckpt_path .*weights\.ckpt: not a PyTorch file .*Expected a Lightning"
    with pytest.raises(CheckpointError, match=expected):
        check_checkpoint(path)


def test_a_text_file_is_called_a_text_file(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("these are my notes\n")
    with pytest.raises(CheckpointError, match="a text file"):
        check_checkpoint(path)


def test_a_plain_state_dict_is_called_one(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(nn.Linear(2, 3).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"a plain state dict \(2 tensors, e\.g\. 'weight'\) without Lightning"):
        check_checkpoint(path)


def test_a_truncated_checkpoint_is_called_damaged(tmp_path, boring_ckpt):
    path = tmp_path / "last.ckpt"
    data = boring_ckpt.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated zip archive"):
        check_checkpoint(path)


def test_a_checkpoint_of_another_model_names_both_weight_layouts(boring_ckpt):
    check_checkpoint(boring_ckpt)  # a Lightning checkpoint: fine without a model to compare with
    with pytest.raises(CheckpointError, match=r"another model: its weights are under \['layer'\], _Seg's under"):
        check_checkpoint(boring_ckpt, _Seg())


def test_a_checkpoint_of_another_task_or_label_space_is_refused(tmp_path, boring_ckpt):
    ckpt = torch.load(boring_ckpt, weights_only=True)
    ckpt["state_dict"] = {f"master.{k}": v for k, v in ckpt["state_dict"].items()}
    ckpt["hyper_parameters"] = {"task": "semantic", "num_classes": 150}
    path = tmp_path / "ade.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="num_classes=150, but this run has num_classes=19"):
        check_checkpoint(path, _Seg())


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt: no such file"):
        check_checkpoint(tmp_path / "nope.ckpt")


def test_safetensors_weights_point_to_the_encoder_option(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "enc.safetensors")
    with pytest.raises(CheckpointError, match="weights=PATH"):
        check_checkpoint(tmp_path / "enc.safetensors")


# -- data settings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"crop_size": 0}, "crop_size must be an int or \\[height, width\\] of positive ints, got 0"),
    ({"crop_size": [512, -1]}, "crop_size"),
    ({"batch_size": 0}, "--data.batch_size 0 \\(must be >= 1\\)"),
    ({"num_workers": -2, "eval_short_side": 0}, "--data.num_workers -2 .*--data.eval_short_side 0"),
    ({"color_jitter": -0.1}, "--data.color_jitter"),
])
def test_invalid_numbers_in_the_data_settings_are_named_before_any_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegDataModule(**kwargs)


# -- COCO annotations without area ------------------------------------------------------------------------
def test_coco_annotations_without_area_are_counted_not_dropped_silently(tmp_path, caplog):
    square = [0, 0, 8, 0, 8, 8, 0, 8]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square], "area": 64, "bbox": [0, 0, 8, 8],
         "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [], "area": 0, "bbox": [0, 0, 0, 0], "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 5]], "area": 0, "bbox": [1, 1, 4, 4],
         "iscrowd": 0},
    ]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}], "annotations": anns,
            "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="fusionseg.data.coco_format"):
        annotations = InstanceAnnotations(path, lambda image: tmp_path / image["file_name"], {1: 0})
    assert annotations.dropped_annotations == {"an empty polygon list": 1, "polygons of fewer than 3 points": 1}
    assert "skipping 2 of 3 annotations that have no area" in caplog.text and str(path) in caplog.text
    assert annotations.load_target(0).labels.tolist() == [0]  # the one with area is kept


def test_a_checkpoint_whose_hyperparameters_another_class_takes_is_refused_before_loading(tmp_path, boring_ckpt):
    ckpt = torch.load(boring_ckpt, weights_only=True)
    ckpt["hyper_parameters"] = {"hidden_size": 32, "task": "semantic"}
    path = tmp_path / "other.ckpt"
    torch.save(ckpt, path)

    class Model:
        def __init__(self, master: str, task: str = "semantic") -> None: ...

    with pytest.raises(CheckpointError, match=r"hyperparameters \['hidden_size'\] are not arguments of Model"):
        check_checkpoint(path, model_class=Model)
