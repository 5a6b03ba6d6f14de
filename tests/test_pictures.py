"""Pictures a user looks at: palette label PNGs, overlay colours that show on the image, titled grids."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from fusionseg.callbacks.overlay import display_colors, distinct_colors, overlay, pil_palette
from fusionseg.callbacks.prediction_writer import save_label_png
from fusionseg.data.synthetic import synthetic_info
from fusionseg.structures import IGNORE_INDEX, DatasetInfo


def test_label_png_is_a_palette_image_whose_values_are_the_class_ids(tmp_path):
    labels = torch.tensor([[0, 3], [IGNORE_INDEX, 1]])
    colors = torch.tensor([[10, 20, 30], [40, 50, 60], [70, 80, 90], [200, 0, 0]], dtype=torch.uint8)
    save_label_png(tmp_path / "p.png", labels, num_classes=4, colors=colors)
    picture = Image.open(tmp_path / "p.png")
    assert picture.mode == "P"
    assert np.asarray(picture).tolist() == [[0, 3], [255, 1]]  # the ids, as with raw ids
    rgb = np.asarray(picture.convert("RGB"))
    assert rgb[0, 1].tolist() == [200, 0, 0] and rgb[1, 0].tolist() == [0, 0, 0]  # class 3 coloured, void black
    save_label_png(tmp_path / "raw.png", labels, num_classes=4)  # raw_ids: greyscale
    assert Image.open(tmp_path / "raw.png").mode == "L"


def test_pil_palette_has_256_entries_with_void_black():
    table = pil_palette(torch.tensor([[1, 2, 3]], dtype=torch.uint8))
    assert len(table) == 768 and table[:3] == [1, 2, 3] and table[255 * 3:] == [0, 0, 0]


def test_synthetic_overlays_use_colours_far_from_the_objects_own():
    info = synthetic_info("semantic")
    own = torch.tensor(info.colors, dtype=torch.uint8)
    shown = display_colors(info.num_classes, info)  # auto: the synthetic images are drawn in `own`
    assert (shown.float() - own.float()).norm(dim=1).min() > 100
    assert len({tuple(c) for c in shown.tolist()}) == info.num_classes
    real = DatasetInfo("cityscapes-like", ("road", "car"), (False, True), ((128, 64, 128), (0, 0, 142)))
    assert display_colors(2, real).tolist() == [[128, 64, 128], [0, 0, 142]]  # a real dataset keeps its palette
    assert display_colors(2, real, "distinct").tolist() != [[128, 64, 128], [0, 0, 142]]


@given(st.integers(1, 40))
def test_distinct_colors_differ_from_each_other_and_from_the_avoided_ones(n):
    avoid = torch.randint(0, 256, (n, 3), generator=torch.Generator().manual_seed(n), dtype=torch.int64).to(torch.uint8)
    out = distinct_colors(avoid)
    assert out.shape == (n, 3) and out.dtype == torch.uint8
    assert len({tuple(c) for c in out.tolist()}) == n


def test_overlay_class_outlines_mark_borders_in_white():
    image = torch.zeros(3, 3, 4)
    semantic = torch.tensor([[0, 0, 1, 1]] * 3)
    colors = torch.tensor([[255, 0, 0], [0, 0, 255]], dtype=torch.uint8)
    out = overlay(image, semantic, colors, alpha=1.0, class_outlines=True)
    assert out[0, 1].tolist() == [255, 255, 255]  # last column of class 0 before class 1
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 3].tolist() == [0, 0, 255]
