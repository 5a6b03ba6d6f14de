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
from fusionseg.grids import legend, titled_grid
from fusionseg.metrics import METRIC_NAMES
from fusionseg.plan import FusionPlan
from fusionseg.profiling import Profile
from fusionseg.structures import IGNORE_INDEX, DatasetInfo
from fusionseg.visualize import IMAGE_EDGE_RGB, contact_sheet, profile_figure


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


# -- grids, contact sheets and the profile figure --------------------------------------------------------------
def test_titled_grid_scales_rows_and_makes_room_for_titles_legend_and_notes():
    red = np.zeros((20, 40, 3), np.uint8)
    red[..., 0] = 255
    plain = titled_grid([[red, red]], row_height=40, gap=4)
    assert plain.shape == (4 + 40 + 4 + 4, 4 + 80 + 4 + 80 + 4, 3)  # each cell 80x40 after scaling
    full = titled_grid([[red, red], [red]], ["image", "prediction"], title="a title", notes="a note",
                       legend_entries=[("road", (128, 64, 128)), ("car", (0, 0, 142))], row_height=40)
    assert full.shape[0] > plain.shape[0] + 40 and full.shape[1] >= plain.shape[1]
    assert (full == [128, 64, 128]).all(axis=2).any()  # the legend swatch is drawn


def test_legend_wraps_entries_to_the_width():
    entries = [(f"class {i}", (i, i, i)) for i in range(30)]
    one_line = legend(entries[:1], width=400)
    many = legend(entries, width=400)
    assert many.shape[1] == 400 and many.shape[0] >= 4 * one_line.shape[0]


def test_contact_sheet_holds_every_stride_of_every_image_on_one_page():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    feats = {4: torch.randn(2, 8, 8, 8), 8: torch.randn(2, 8, 4, 4)}
    sheet = contact_sheet("edges", feats, images, cell=32)
    # 2 rows of 32 px plus title, column titles, edge legend and notes; 1 + 2 x 2 columns of 32 px
    assert sheet.dtype == np.uint8 and sheet.shape[0] > 2 * 32 + 60 and sheet.shape[1] >= 5 * 32
    green = tuple(round(255 * c) for c in IMAGE_EDGE_RGB)
    assert (sheet == green).all(axis=2).any()


def _profile() -> Profile:
    def vals(sc: float, ef: float) -> dict[str, list[float]]:
        return {m: [sc, sc + 0.1] if m == "sc" else [ef, ef + 1] if m == "ef" else [0.5, 0.5] for m in METRIC_NAMES}

    return Profile.from_values({
        "regions": {4: vals(0.8, 2), 8: vals(0.8, 3), 16: vals(0.7, 4), 32: vals(0.6, 9)},
        "edges": {4: vals(0.6, 8), 8: vals(0.5, 9), 16: vals(0.4, 5), 32: vals(0.0, 20)},
    })


def test_profile_figure_labels_its_axes_and_explains_bands_and_left_out_strides():
    plan = FusionPlan("regions", "edges", (8,), scores={"plan_metric": "ef", "min_map_side": 16,
                                                      "excluded_strides": {"edges": [32], "regions": [32]}})
    fig = profile_figure(_profile(), plan)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["SC", "EF  (the plan's metric)"]
    assert all(ax.get_xlabel().startswith("output stride") for ax in axes)
    assert axes[0].get_ylabel().startswith("SC: structural coherence") and axes[1].get_ylabel().startswith("EF:")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "edges (aux)" in labels and "regions (master)" in labels
    assert "injection stride OS 8 (edges's EF peak)" in labels
    assert "band: ± 1 std over 2 images" in labels
    assert any("not used for the plan (maps < 16 px" in label for label in labels)
    assert not profile_figure(_profile()).legends[0].get_texts()[-1].get_text().startswith("hollow")
