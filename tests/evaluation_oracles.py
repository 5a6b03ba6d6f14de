"""The official evaluation code, run on files written in its input formats: the oracles of the parity tests.

* `cocoeval_stats`: pycocotools' COCOeval (iouType "segm") on the same masks.
* `cityscapes_pixel_iou`: cityscapesScripts' `evalPixelLevelSemanticLabeling` (mIoU) on label-id PNGs.
* `cityscapes_instance_ap`: cityscapesScripts' `evalInstanceLevelSemanticLabeling` on `*_instanceIds.png`
  ground truth and its prediction format (one PNG per mask, a text file per image).
* `official_pq`: cityscapesScripts' `evalPanopticSemanticLabeling` (a copy of panopticapi's `pq_compute`)
  on COCO-panoptic JSON + PNGs, ground truth and predictions.
* `create_panoptic_imgs`: cityscapesScripts' converter `preparation/createPanopticImgs.py`.
* `kitti360_instance_ap`: kitti360Scripts' 2D instance evaluation (Cityscapes' script with KITTI-360's
  classes, void list and confidence-weighted pixels).

cityscapesScripts 2.3.0 calls `np.in1d` (removed in NumPy 2.4) and json-dumps NumPy integers: the
`cityscapes_scripts` fixture patches both for the duration of a test (see `OfficialScripts`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionseg.structures import SegPrediction, SegTarget


# ------------------------------------------------------------------------------------------ COCOeval
def cocoeval_stats(
    preds: Sequence[SegPrediction], targets: Sequence[SegTarget], num_classes: int, max_detections: int = 100
) -> tuple[np.ndarray, dict[int, float]]:
    """COCOeval's 12 summary numbers and per-class AP (area all, most detections) for the given images."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(mask: torch.Tensor) -> dict:
        encoded = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}

    images, annotations, results = [], [], []
    for image_id, (pred, target) in enumerate(zip(preds, targets)):
        images.append({"id": image_id, "height": target.masks.shape[1], "width": target.masks.shape[2]})
        for mask, label, crowd in zip(target.masks, target.labels, target.iscrowd):
            segm = rle(mask)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "segmentation": segm, "area": float(mask_utils.area(segm)),
                                "bbox": list(mask_utils.toBbox(segm)), "iscrowd": int(crowd)})
        for mask, label, score in zip(pred.masks, pred.labels, pred.scores):
            results.append(
                {"image_id": image_id, "category_id": int(label), "segmentation": rle(mask), "score": float(score)}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c} for c in range(num_classes)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "segm")
        evaluation.params.maxDets = [1, 10, max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, c in enumerate(evaluation.params.catIds):
        values = precision[:, :, k]
        per_class[c] = float(values[values > -1].mean()) if (values > -1).any() else float("nan")
    return evaluation.stats, per_class


# ----------------------------------------------------------------------------------- cityscapesScripts
def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return value.__dict__  # what cityscapesScripts' writeDict2JSON does for everything else


def _write_dict_to_json(data: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(data, f, default=_json_default, sort_keys=True, indent=4)


class OfficialScripts:
    """cityscapesScripts' evaluation and preparation modules, importable and runnable under NumPy 2.4."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        if not hasattr(np, "in1d"):  # removed in NumPy 2.4; the scripts reshape its flat result themselves
            monkeypatch.setattr(np, "in1d", lambda a, b: np.isin(a, b).ravel(), raising=False)
        from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as instance
        from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as panoptic
        from cityscapesscripts.preparation import createPanopticImgs as converter

        monkeypatch.setattr(instance, "writeDict2JSON", _write_dict_to_json)
        self.instance, self.panoptic, self.converter = instance, panoptic, converter
        self.monkeypatch = monkeypatch


@pytest.fixture
def cityscapes_scripts(monkeypatch: pytest.MonkeyPatch) -> OfficialScripts:
    return OfficialScripts(monkeypatch)


def create_panoptic_imgs(scripts: OfficialScripts, gt_fine: Path, splits: Sequence[str] = ("val",)) -> None:
    """Run createPanopticImgs.py's conversion (label ids as category ids) in `gt_fine`, quietly."""
    with contextlib.redirect_stdout(io.StringIO()):
        scripts.converter.convert2panoptic(str(gt_fine), str(gt_fine), setNames=list(splits))


def write_instance_predictions(
    results: Path, stem: str, masks: torch.Tensor, label_ids: Sequence[int], scores: torch.Tensor
) -> Path:
    """The official instance prediction format: `<stem>_pred.txt` listing `<mask png> <label id> <score>`."""
    results.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (mask, label, score) in enumerate(zip(masks, label_ids, scores)):
        name = f"{stem}_mask{k:03d}.png"
        Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(results / name)
        lines.append(f"{name} {int(label)} {float(score)!r}")
    path = results / f"{stem}_pred.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def cityscapes_instance_ap(
    scripts: OfficialScripts, gt_files: Sequence[Path], pred_files: Sequence[Path], work: Path
) -> dict:
    """`evaluateImgLists`' result dict: `averages` -> `allAp`, `allAp50%`, `classes` -> name -> `ap`, `ap50%`."""
    args = scripts.instance.args
    work.mkdir(parents=True, exist_ok=True)
    settings = {
        "gtInstancesFile": str(work / "gtInstances.json"),  # its cache: a fresh one per run
        "exportFile": str(work / "result.json"), "predictionPath": os.path.abspath(pred_files[0].parent),
        "predictionWalk": None, "JSONOutput": False, "quiet": True, "distanceAvailable": False,
    }
    for name, value in settings.items():
        scripts.monkeypatch.setattr(args, name, value)
    scripts.monkeypatch.chdir(work)  # it writes matches.json to the working directory
    return scripts.instance.evaluateImgLists([str(p) for p in pred_files], [str(p) for p in gt_files], args)


def cityscapes_pixel_iou(
    scripts: OfficialScripts, gt_files: Sequence[Path], pred_files: Sequence[Path], work: Path
) -> dict:
    """`evalPixelLevelSemanticLabeling.evaluateImgLists`' result dict (`classScores`, `averageScoreClasses`)
    for `*_gtFine_labelIds.png` ground truth and label-id prediction PNGs."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as pixel

    for name, value in (("quiet", True), ("JSONOutput", False), ("evalInstLevelScore", False)):
        scripts.monkeypatch.setattr(pixel.args, name, value)
    work.mkdir(parents=True, exist_ok=True)
    scripts.monkeypatch.chdir(work)
    return pixel.evaluateImgLists([str(p) for p in pred_files], [str(p) for p in gt_files], pixel.args)


def kitti360_instance_ap(
    monkeypatch: pytest.MonkeyPatch, gt_files: Sequence[tuple[Path, Path]], pred_files: Sequence[Path], work: Path
) -> dict:
    """kitti360Scripts' 2D `evalInstanceLevelSemanticLabeling` on (instance PNG, confidence PNG) pairs; its
    result dict has the Cityscapes script's layout. kitti360Scripts 1.0.0 also uses `np.float` and `np.bool`
    (removed in NumPy 1.24): patched for the duration of the test."""
    for name, value in (("float", float), ("bool", bool), ("in1d", lambda a, b: np.isin(a, b).ravel())):
        if not hasattr(np, name):
            monkeypatch.setattr(np, name, value, raising=False)
    from kitti360scripts.evaluation.semantic_2d import evalInstanceLevelSemanticLabeling as kitti

    monkeypatch.setattr(kitti, "writeDict2JSON", _write_dict_to_json)
    work.mkdir(parents=True, exist_ok=True)
    settings = {
        "gtInstancesFile": str(work / "gtInstances.json"), "exportFile": str(work / "result.json"),
        "predictionPath": os.path.abspath(pred_files[0].parent), "predictionWalk": None, "JSONOutput": False,
        "quiet": True, "distanceAvailable": False,
    }
    for name, value in settings.items():
        monkeypatch.setattr(kitti.args, name, value)
    monkeypatch.chdir(work)
    pairs = [[str(gt), str(confidence)] for gt, confidence in gt_files]
    return kitti.evaluateImgLists([str(p) for p in pred_files], pairs, kitti.args)


def write_panoptic_predictions(
    folder: Path, json_path: Path, images: Sequence[tuple[str, torch.Tensor, Sequence[int]]]
) -> None:
    """COCO panoptic results: per image (image id, `(H, W)` segment ids with 0 = none, category id per id 1..)."""
    folder.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image_id, ids, categories in images:
        array = ids.numpy().astype(np.int64)
        rgb = np.stack([array % 256, array // 256 % 256, array // 65536], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{image_id}.png")
        present = set(np.unique(array).tolist()) - {0}
        segments = [{"id": i, "category_id": int(categories[i - 1])} for i in sorted(present)]
        annotations.append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments})
    json_path.write_text(json.dumps({"annotations": annotations}))


def official_pq(
    scripts: OfficialScripts, gt_json: Path, gt_folder: Path, pred_json: Path, pred_folder: Path
) -> tuple[dict, dict[int, tuple[float, int, int, int]]]:
    """`average_pq`'s results (All / Things / Stuff, per_class) and the raw (iou, tp, fp, fn) per category.

    The per-image work is `pq_compute_single_core`, the function `evaluatePanoptic` runs on each core.
    """
    gt = json.loads(gt_json.read_text())
    predictions = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
    categories = {c["id"]: c for c in gt["categories"]}
    pairs = [(a, predictions[a["image_id"]]) for a in gt["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        stat = scripts.panoptic.pq_compute_single_core(0, pairs, str(gt_folder), str(pred_folder), categories)
    raw = {c: (stat[c].iou, stat[c].tp, stat[c].fp, stat[c].fn) for c in categories}
    return scripts.panoptic.average_pq(stat, categories), raw
