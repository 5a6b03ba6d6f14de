"""Joint transforms keep image and masks aligned; collation pads images and (training) targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from fusionseg.data import EvalTransform, SegCollate, SegItem, TrainTransform
from fusionseg.data.base import semantic_target
from fusionseg.data.transforms import choice_sizes, color_aug_ssd, eval_size
from fusionseg.structures import SegTarget

# Colours far apart, one per class, so a pixel's colour tells its class.
PALETTE = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)


def colour_coded(label: torch.Tensor) -> tuple[torch.Tensor, SegTarget]:
    """An image whose colour encodes `label` (H, W), and the matching semantic target."""
    return PALETTE[label].permute(2, 0, 1).contiguous(), semantic_target(label.numpy())


def decode(image: torch.Tensor) -> torch.Tensor:
    """The class whose colour is nearest to each pixel of a [0, 1] image."""
    distance = torch.cdist(image.permute(1, 2, 0).reshape(-1, 3), PALETTE.float() / 255)
    return distance.argmin(1).reshape(image.shape[-2:])


def interior(mask: torch.Tensor, margin: int) -> torch.Tensor:
    """Mask pixels at least `margin` pixels from the mask's outside and from the crop's border (a boundary
    just outside the crop blends into border pixels too)."""
    outside = F.pad((~mask).float()[None, None], (margin,) * 4, value=1.0)
    near = F.max_pool2d(outside, 2 * margin + 1, stride=1)[0, 0] > 0
    return mask & ~near


@st.composite
def label_maps(draw: st.DrawFn) -> torch.Tensor:
    """Blocky label maps: a few rectangles of classes 0..3 on a random-sized canvas."""
    h, w = draw(st.integers(12, 48)), draw(st.integers(12, 48))
    label = torch.full((h, w), draw(st.integers(0, 3)), dtype=torch.long)
    for _ in range(draw(st.integers(1, 3))):
        y0, x0 = draw(st.integers(0, h - 4)), draw(st.integers(0, w - 4))
        y1, x1 = draw(st.integers(y0 + 4, h)), draw(st.integers(x0 + 4, w))
        label[y0:y1, x0:x1] = draw(st.integers(0, 3))
    return label


@given(label=label_maps(), crop=st.sampled_from([16, 24, 32, (16, 32), (24, 12)]), seed=st.integers(0, 2**16),
       recipe=st.sampled_from([{}, {"resize": "lsj"}, {"scale_step": 0.1, "max_size": 96}]))
def test_train_transform_keeps_colour_and_masks_aligned(
    label: torch.Tensor, crop: int | tuple[int, int], seed: int, recipe: dict
) -> None:
    image, target = colour_coded(label)
    torch.manual_seed(seed)
    out_image, out_target = TrainTransform(crop, scale_range=(0.5, 2.0), color_jitter=0.0, **recipe)(image, target)
    hw = (crop, crop) if isinstance(crop, int) else crop
    assert out_image.shape == (3, *hw) and out_image.dtype == torch.float32
    assert out_target.masks.shape[-2:] == hw
    # No mask is empty, masks stay disjoint, and padding (black) lies outside every mask.
    assert out_target.masks.flatten(1).any(1).all()
    assert out_target.masks.sum(0).max() <= 1
    assert (out_image[:, ~out_target.masks.any(0)] == 0).all()
    decoded = decode(out_image)
    for mask, cls in zip(out_target.masks, out_target.labels):
        core = interior(mask, margin=2)
        assert (decoded[core] == cls).all(), f"class {int(cls)} mask and image disagree"


@given(label=label_maps(), seed=st.integers(0, 2**16))
def test_colour_jitter_changes_the_image_only(label: torch.Tensor, seed: int) -> None:
    image, target = colour_coded(label)
    torch.manual_seed(seed)
    plain = TrainTransform(32, color_jitter=0.0)(image, target)
    torch.manual_seed(seed)
    jittered = TrainTransform(32, color_jitter=0.4)(image, target)
    assert torch.equal(plain[1].masks, jittered[1].masks) and torch.equal(plain[1].labels, jittered[1].labels)


def test_mask2former_short_side_choices_and_test_sizes() -> None:
    # configs/cityscapes/*/Base-Cityscapes-*.yaml: MIN_SIZE_TRAIN [int(x * 0.1 * 1024) for x in range(5, 21)]
    assert choice_sizes(1024, (0.5, 2.0), 0.1) == [int(x * 0.1 * 1024) for x in range(5, 21)]
    assert choice_sizes(376, (1.1, 2.0), 0.1) == [int(x * 0.1 * 376) for x in range(11, 21)]  # released KITTI-360
    shortest = TrainTransform((512, 1024), scale_step=0.1, max_size=4096, scale_base=1024).transform.transforms[0]
    assert list(shortest.min_size) == choice_sizes(1024, (0.5, 2.0), 0.1) and shortest.max_size == 4096
    # detectron2's ResizeShortestEdge at test time, rounded half up.
    assert eval_size(1024, 2048, 1024, 2048) == (1024, 2048)  # Cityscapes: full resolution
    assert eval_size(480, 640, 800, 1333) == (800, 1067)  # COCO
    assert eval_size(400, 1600, 800, 1333) == (333, 1333)  # the long side caps the scale


def test_large_scale_jitter_scales_the_long_side_and_pads_the_square() -> None:
    label = torch.zeros(40, 80, dtype=torch.long)
    label[:, 40:] = 1
    image, target = colour_coded(label)
    out_image, out_target = TrainTransform(64, scale_range=(1.0, 1.0), resize="lsj", flip=False, color_aug="none")(
        image, target
    )
    inside = out_target.masks.any(0)
    assert out_image.shape == (3, 64, 64) and int(inside.sum()) == 32 * 64  # 40x80 fitted to 64: 32x64, then padded
    assert (out_image[:, ~inside] == 0).all()


@given(label=label_maps(), seed=st.integers(0, 2**16))
def test_ssd_colour_augmentation_changes_colours_only_and_leaves_padding_black(label: torch.Tensor, seed: int) -> None:
    image, target = colour_coded(label)
    torch.manual_seed(seed)
    plain = TrainTransform(64, scale_range=(0.5, 0.5), color_aug="none")(image, target)
    torch.manual_seed(seed)
    ssd = TrainTransform(64, scale_range=(0.5, 0.5), color_aug="ssd")(image, target)
    assert torch.equal(plain[1].masks, ssd[1].masks) and torch.equal(plain[1].labels, ssd[1].labels)
    padding = ~ssd[1].masks.any(0)
    assert bool(padding.any()) and (ssd[0][:, padding] == 0).all()  # a 64 crop of an image under 24x24 pads
    assert 0 <= float(ssd[0].min()) and float(ssd[0].max()) <= 1


def test_ssd_saturation_is_hsv_saturation() -> None:
    from fusionseg.data.transforms import _saturate

    rgb = torch.tensor([0.8, 0.4, 0.2]).view(3, 1, 1)  # HSV: V 0.8, S 0.75
    assert torch.allclose(_saturate(rgb, 1.0), rgb)
    assert torch.allclose(_saturate(rgb, 0.0), torch.full_like(rgb, 0.8))  # no saturation: grey at V
    assert torch.allclose(_saturate(rgb, 2.0), torch.tensor([0.8, 0.0 + 0.8 / 3, 0.0]).view(3, 1, 1))  # S capped at 1
    torch.manual_seed(0)
    out = torch.stack([color_aug_ssd(torch.rand(3, 8, 8)) for _ in range(20)])
    assert 0 <= float(out.min()) and float(out.max()) <= 1


def test_eval_transform_resizes_the_image_and_keeps_the_target() -> None:
    label = torch.zeros(30, 40, dtype=torch.long)
    label[10:, 20:] = 2
    image, target = colour_coded(label)
    out_image, out_target = EvalTransform(short_side=15)(image, target)
    assert out_image.shape == (3, 15, 20) and out_target is target
    same_image, _ = EvalTransform(None)(image, target)
    assert same_image.shape == (3, 30, 40) and torch.allclose(same_image * 255, image.float())


def item(h: int, w: int, orig: tuple[int, int], skipped: tuple[str, ...] = ()) -> SegItem:
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[0, : h // 2] = True
    target = SegTarget(masks=mask, labels=torch.tensor([1]))
    return SegItem(torch.rand(3, h, w), target, f"img{h}x{w}", orig, skipped)


def test_collate_pads_to_multiples_of_32_and_records_sizes() -> None:
    items = [item(40, 50, (80, 100)), item(33, 70, (33, 70), skipped=("bad.png",))]
    batch = SegCollate(pad_targets=True)(items)
    assert batch.images.shape == (2, 3, 64, 96)
    assert batch.image_sizes == [(40, 50), (33, 70)] and batch.orig_sizes == [(80, 100), (33, 70)]
    assert batch.image_ids == ["img40x50", "img33x70"] and batch.skipped == ["bad.png"]
    assert torch.equal(batch.images[0, :, :40, :50], items[0].image) and batch.images[0, :, 40:].abs().sum() == 0
    # Training targets are padded like the images; the padding is outside every mask.
    assert batch.targets[0].masks.shape == (1, 64, 96)
    assert torch.equal(batch.targets[0].masks[:, :40, :50], items[0].target.masks)
    assert not batch.targets[0].masks[:, 40:].any() and not batch.targets[0].masks[:, :, 50:].any()


def test_eval_collate_keeps_targets_at_their_size() -> None:
    batch = SegCollate(pad_targets=False)([item(40, 50, (40, 50)), item(20, 20, (20, 20))])
    assert batch.images.shape == (2, 3, 64, 64)
    assert [t.masks.shape[-2:] for t in batch.targets] == [(40, 50), (20, 20)]
