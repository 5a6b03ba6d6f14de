"""`fusionseg profile`: score encoders per stride (SC, EF), choose the fusion plan, draw the evidence.

    fusionseg profile --encoders edges regions --images DIR --num-images 8 --image-size 512 --out OUT

Writes OUT/profile.json, profile.csv, plan.json, profile.png and OUT/maps/<encoder>.png (one contact sheet
per encoder: PCA and edge maps of every stride, titled, with a legend),
and prints the SC/EF table and the plan. Unreadable images are skipped and counted, as the datasets do
with `skip_corrupt`; an OUT that cannot be written is reported before any work starts.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from fusionseg.data.errors import CorruptFileError
from fusionseg.data.io import read_image
from fusionseg.encoders import Encoder, EncoderPluginError, EncoderSpec, UnknownEncoderError
from fusionseg.plan import PLAN_TASKS, encoder_names
from fusionseg.profiling import DEFAULT_PLAN_METRIC, PLAN_METRICS, Profile, plan_fusion, profile_encoders
from fusionseg.visualize import save_contact_sheet, save_profile_figure

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def sample_images_dir() -> Path:
    """The folder of sample photographs shipped with fusionseg."""
    return Path(str(resources.files("fusionseg") / "assets" / "samples"))


def list_images(folder: str | Path) -> list[Path]:
    """The jpg/png files directly in `folder`, sorted; a clear error when there are none."""
    folder = Path(folder)
    looked_for = ", ".join(f"*{s}" for s in IMAGE_SUFFIXES)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist (looked for {looked_for} in it)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}: looked for {looked_for} (any letter case)")
    return files


def square_resize(image: Tensor, size: int) -> Tensor:
    """Center-crop `(3, H, W)` to a square and resize it (bilinear, antialiased) to `size x size`."""
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[:, top : top + side, left : left + side]
    resized = F.interpolate(crop[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp(0, 1)


def load_image(path: Path, size: int) -> Tensor:
    """An image file upright (EXIF orientation applied, as the dataset readers do), squared to `size`."""
    return square_resize(read_image(path).float().div_(255), size)


def folder_images(folder: str | Path, num_images: int, size: int, skipped: list[str] | None = None) -> Tensor:
    """The first `num_images` readable images of `folder`, squared to `size`.

    Unreadable files are skipped (their paths appended to `skipped`, when given); none readable is an error.
    """
    files = list_images(folder)
    out: list[Tensor] = []
    unreadable: list[str] = []
    for path in files:
        if len(out) == num_images:
            break
        try:
            out.append(load_image(path, size))
        except CorruptFileError:
            unreadable.append(str(path))
    if skipped is not None:
        skipped.extend(unreadable)
    if not out:
        raise FileNotFoundError(f"none of the {len(files)} image files in {folder} could be read: {unreadable[:5]}")
    return torch.stack(out)


def check_writable(folder: Path) -> None:
    """Create `folder` and write a file in it, so a bad `--out` fails before the profiling, not after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"--out {folder}: cannot write there ({type(err).__name__}: {err}); choose a folder you "
                         "can write to") from None


def build_datamodule(config: str | Path) -> Any:
    """A `SegDataModule` from YAML: `data: {class_path: ..., init_args: {...}}` or its init args directly."""
    from jsonargparse import ArgumentParser

    from fusionseg.data import SegDataModule  # imported here: only `--data` needs the datasets

    cfg = yaml.safe_load(Path(config).read_text()) or {}
    section = cfg.get("data", cfg) if isinstance(cfg, dict) else None
    if not isinstance(section, dict) or not section:
        raise ValueError(
            f"{config}: expected `data: {{class_path: fusionseg.data.SegDataModule, init_args: {{...}}}}` "
            "or the SegDataModule arguments (e.g. `dataset: ..., root: ...`) at the top level"
        )
    parser = ArgumentParser(exit_on_error=False)
    if "class_path" in section:
        parser.add_subclass_arguments(SegDataModule, "data")
    else:
        parser.add_class_arguments(SegDataModule, "data")
    parsed = parser.parse_object({"data": section})
    return parser.instantiate_classes(parsed).data


def dataset_images(config: str | Path, num_images: int, size: int, skipped: list[str] | None = None) -> Tensor:
    """The first `num_images` validation images of a dataset config, each cropped to its true size and squared.

    Unreadable files are skipped (`skip_corrupt`, whatever the config says) and appended to `skipped`.
    """
    datamodule = build_datamodule(config)
    datamodule.skip_corrupt = True  # a profile needs some readable images, not every one
    # No loader workers: a loader left half-read keeps its persistent workers, which ignore SIGTERM
    # (fusionseg.data.workers), so the interpreter's exit would wait on them forever.
    datamodule.num_workers = 0
    datamodule.setup("validate")
    out: list[Tensor] = []
    batches: Iterator[Any] = iter(datamodule.val_dataloader())
    for batch in batches:
        if skipped is not None:
            skipped.extend(p for p in getattr(batch, "skipped", ()) if p not in skipped)
        for i, image in enumerate(batch.images):
            h, w = (int(v) for v in batch.image_sizes[i])
            out.append(square_resize(image[:, :h, :w], size))
            if len(out) == num_images:
                return torch.stack(out)
    if not out:
        raise ValueError(f"the validation split of {config} holds no images")
    return torch.stack(out)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fusionseg profile",
        description="Score encoders per stride with the label-free SC and EF metrics and choose the fusion plan.",
    )
    parser.add_argument("--encoders", nargs="+", default=["edges", "regions"], metavar="NAME[:key=value,...]",
                        help="encoders from the registry (see `fusionseg encoders`), default: edges regions")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path,
                        help="folder of jpg/png images (default: the shipped sample photographs)")
    source.add_argument("--data", type=Path,
                        help="dataset YAML (a SegDataModule config); its validation images are used")
    parser.add_argument("--num-images", type=int, default=16, help="number of images to profile (default 16)")
    parser.add_argument("--image-size", type=int, default=512,
                        help="images are center-cropped and resized to S x S (512: stride-32 maps of 16x16)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--task", choices=PLAN_TASKS, default="semantic", help="task the plan is made for")
    parser.add_argument("--plan-metric", choices=sorted(PLAN_METRICS), default=DEFAULT_PLAN_METRIC,
                        help=f"per-stride score that picks the auxiliary and its stride (default {DEFAULT_PLAN_METRIC})")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-maps", type=int, default=2,
                        help="images drawn on each encoder's contact sheet OUT/maps/<encoder>.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-sc-gt", action="store_true",
                        help="with --data: skip SC_GT, SC with the labels' segments as clusters, and the Spearman "
                             "correlation of SC with it over encoders x strides (OUT/sc_gt.json, sc_gt.md)")
    args = parser.parse_args(list(argv))
    for name in ("num_images", "image_size", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.num_maps < 0:
        parser.error(f"--num-maps must be >= 0, got {args.num_maps}")
    return args


def build_encoders(specs: Sequence[str], device: torch.device) -> dict[str, Encoder]:
    """The encoders, named as plans name them (`fusionseg.plan.encoder_names`), so `fit` accepts the plan."""
    parsed = [EncoderSpec.parse(s) for s in specs]
    return {name: spec.build().to(device).eval() for name, spec in zip(encoder_names(parsed), parsed)}


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    device = _device(args.device)
    check_writable(args.out)
    skipped: list[str] = []
    if args.data is not None:
        images = dataset_images(args.data, args.num_images, args.image_size, skipped)
        source = f"validation images of {args.data}"
    else:
        folder = args.images if args.images is not None else sample_images_dir()
        images = folder_images(folder, args.num_images, args.image_size, skipped)
        source = str(folder)
    if skipped:
        shown = "\n  ".join(skipped[:20]) + (f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else "")
        print(f"fusionseg profile: skipped {len(skipped)} unreadable image(s):\n  {shown}", file=sys.stderr)
    if images.shape[0] < args.num_images:
        print(f"note: {source} holds {images.shape[0]} images; profiling all of them (asked for {args.num_images})")
    encoders = build_encoders(args.encoders, device)
    print(f"profiling {', '.join(encoders)} on {images.shape[0]} images of {args.image_size}x{args.image_size} "
          f"from {source} ({device})")
    profile = profile_encoders(encoders, images, batch_size=args.batch_size, progress=not args.no_progress,
                               seed=args.seed)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    profile.save_json(out / "profile.json")
    profile.save_csv(out / "profile.csv")
    for line in profile.nonfinite_report():
        print(f"fusionseg profile: warning: {line}", file=sys.stderr)
    plan = plan_fusion(profile, task=args.task, plan_metric=args.plan_metric) if len(encoders) >= 2 else None
    if plan is not None:
        plan.save(out / "plan.json")
    save_profile_figure(out / "profile.png", profile, plan)
    sheets = _draw_maps(out / "maps", encoders, images[: args.num_maps], device, profile)
    print()
    print(profile.table(("sc", "ef", "ef_cc", "fcd")))
    print()
    if plan is None:
        print("one encoder profiled: no fusion plan (a plan needs a structure-strong and an edge-strong encoder)")
    else:
        from fusionseg.callbacks.profile_report import explain_plan

        print(f"plan: {plan.summary()}")
        print("\n".join(f"  {line}" for line in explain_plan(plan, profile)))
    maps = f" and maps/ ({', '.join(p.name for p in sheets)})" if sheets else ""
    print(f"wrote {out}/profile.json, profile.csv{', plan.json' if plan else ''}, profile.png{maps}")
    if args.data is not None and not args.no_sc_gt:  # labelled images: does SC rank as the labels do?
        from fusionseg.profiling.sc_gt import sc_gt_report

        datamodule = build_datamodule(args.data)
        datamodule.skip_corrupt = True
        text = sc_gt_report(datamodule, encoders, args.num_images, args.image_size, out, args.batch_size, args.seed)
        print(f"\nSC against the labels (SC_GT), on the same images:\n{text}", end="")
    return 0


@torch.no_grad()
def _draw_maps(folder: Path, encoders: dict[str, Encoder], images: Tensor, device: torch.device,
               profile: Profile) -> list[Path]:
    """One contact sheet per encoder, `folder/<encoder>.png`."""
    if images.shape[0] == 0:
        return []
    sheets = []
    x = images.to(device)
    for label, enc in encoders.items():
        # A full spec (`timm:model_name=resnet18`) names the file `timm-model_name-resnet18.png`.
        name = re.sub(r"[^\w.]+", "-", label).strip("-")
        feats = {s: f.cpu() for s, f in enc(enc.normalize(x)).items()}
        sheets.append(save_contact_sheet(folder / f"{name}.png", label, feats, images.cpu(), profile=profile))
    return sheets


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except (FileNotFoundError, ValueError, UnknownEncoderError, EncoderPluginError, CorruptFileError) as err:
        print(f"fusionseg profile: error: {err}", file=sys.stderr)
        return 2
