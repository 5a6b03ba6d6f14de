"""`fusionseg.inference.Segmenter`: one image in, a prediction and a picture out, from a checkpoint of `fit`."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from fusionseg.data import SegDataModule
from fusionseg.heads import HeadConfig
from fusionseg.inference import Segmenter, as_image_tensor
from fusionseg.module import FusedSegModule

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:.*module\\(s\\) in eval mode"),
    pytest.mark.filterwarnings("ignore:.*exceeds the 1 optimizer steps"),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A one-step fit of a tiny fused model on synthetic data, saved as `fit` saves it (with the data's settings)."""
    root = tmp_path_factory.mktemp("segmenter")
    data = SegDataModule(dataset="synthetic", crop_size=32, batch_size=2, num_workers=0, synthetic_train_images=4,
                         synthetic_val_images=2, synthetic_image_size=32)
    info = data.info
    module = FusedSegModule(master="regions:channels=16", aux="edges:channels=16",
                            plan={"master": "regions", "aux": "edges", "strides": [8]},
                            num_classes=info.num_classes, class_names=list(info.class_names),
                            head=HeadConfig(num_queries=4, dec_layers=1, enc_layers=1, hidden_dim=32, num_heads=4,
                                            dim_feedforward=32, enc_feedforward=32, train_points=64))
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
    trainer.fit(module, datamodule=data)
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_predict_returns_the_prediction_at_the_image_size_and_a_picture(checkpoint, tmp_path):
    segmenter = Segmenter.from_checkpoint(checkpoint)
    assert segmenter.info is not None and segmenter.info.name == "synthetic"  # names and colours came along
    assert segmenter.class_names[:2] == ["meadow", "pavement"]
    photo = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    for image in (tmp_path / "photo.png", Image.fromarray(photo), photo, torch.from_numpy(photo).permute(2, 0, 1)):
        prediction, picture = segmenter.predict(image)
        assert prediction.semantic.shape == (37, 53)
        assert int(prediction.semantic.max()) < segmenter.module.num_classes
        assert picture.size == (53, 37) and picture.mode == "RGB"


def test_images_are_read_in_every_usual_form_and_a_wrong_one_is_named():
    float_image = torch.full((3, 4, 5), 0.5)
    assert as_image_tensor(float_image).dtype == torch.uint8 and int(as_image_tensor(float_image)[0, 0, 0]) == 128
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        as_image_tensor(np.zeros((4, 5), np.uint8))
    with pytest.raises(TypeError, match="not list"):
        as_image_tensor([1, 2, 3])


def test_a_missing_checkpoint_says_where_fit_writes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        Segmenter.from_checkpoint(tmp_path / "nope.ckpt")
