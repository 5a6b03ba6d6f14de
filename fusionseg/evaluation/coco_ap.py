"""COCO mask AP computed by pycocotools' COCOeval itself, on masks kept as compressed RLE between updates.

torchmetrics' MeanAveragePrecision builds COCO's ground truth only from images that have annotations, so
detections on an image without ground truth are never false positives there. This metric hands COCOeval
every image it was given (with or without ground truth, with or without detections), so the numbers are
COCOeval's on the same input.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fusionseg.evaluation.states import TypedListStates

# The rows of COCOeval.stats that the summary reports, by name.
STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5}


def encode_masks(masks: Tensor) -> list[bytes]:
    """Compressed COCO RLE strings of `(N, H, W)` masks (pycocotools' `encode`, column-major)."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    # (N, W, H) row-major is (H, W, N) column-major: the layout pycocotools encodes, without another copy.
    fortran = masks.to(torch.uint8).transpose(1, 2).contiguous().cpu().numpy().transpose(2, 1, 0)
    return [rle["counts"] for rle in mask_utils.encode(fortran)]


class CocoMaskAP(TypedListStates):
    """Per-image masks (as RLE), labels, scores and crowd flags; `compute()` runs COCOeval (iouType "segm").

    Every state is a flat tensor concatenated over images, so under DDP each rank's images are gathered
    in rank order and COCOeval sees the whole dataset. `compute()` returns `(stats, per_class)`: COCOeval's
    12 summary numbers (-1 where undefined) and the AP of each class at area "all" and the largest detection
    limit (NaN for a class without ground truth).
    """

    list_states = {
        "image_info": torch.long,  # height, width, ground-truth count, detection count
        "gt_labels": torch.long, "gt_crowd": torch.long, "det_labels": torch.long, "det_scores": torch.float64,
        "rle_lengths": torch.long,  # bytes of each RLE string: an image's ground truth, then its detections
        "rle_bytes": torch.uint8,
    }

    def __init__(self, num_classes: int, max_detections: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.max_detections = num_classes, max_detections

    def update(  # type: ignore[override]
        self,
        det_masks: Tensor,
        det_labels: Tensor,
        det_scores: Tensor,
        gt_masks: Tensor,
        gt_labels: Tensor,
        gt_crowd: Tensor,
    ) -> None:
        """One image: detections `(K, H, W)` with labels and scores; ground truth `(N, H, W)` with labels, crowd."""
        h, w = gt_masks.shape[-2:]
        strings = encode_masks(gt_masks.bool()) + encode_masks(det_masks.bool())
        self.append(
            image_info=torch.tensor([h, w, len(gt_labels), len(det_labels)]),
            gt_labels=gt_labels, gt_crowd=gt_crowd, det_labels=det_labels, det_scores=det_scores,
            rle_lengths=torch.tensor([len(s) for s in strings]),
            rle_bytes=torch.from_numpy(np.frombuffer(b"".join(strings), dtype=np.uint8).copy()),
        )

    def coco_inputs(self) -> tuple[dict, list[dict]]:
        """The ground truth as a COCO dataset dict and the detections as a COCO results list."""
        from pycocotools import mask as mask_utils

        s = self.concatenated()
        s["image_info"] = s["image_info"].reshape(-1, 4)
        data, ends = s["rle_bytes"].tobytes(), np.cumsum(s["rle_lengths"]).tolist()
        strings = [data[a:b] for a, b in zip([0, *ends[:-1]], ends)]  # each image's gts, then its detections
        images, annotations, results = [], [], []
        first_mask = first_gt = first_det = 0
        for image_id, (h, w, n_gt, n_det) in enumerate(s["image_info"].tolist(), start=1):
            images.append({"id": image_id, "height": h, "width": w})
            for k in range(n_gt):
                segm = {"size": [h, w], "counts": strings[first_mask + k]}
                annotations.append({
                    "id": first_gt + k + 1, "image_id": image_id, "category_id": int(s["gt_labels"][first_gt + k]),
                    "segmentation": segm, "area": float(mask_utils.area(segm)),
                    "bbox": mask_utils.toBbox(segm).tolist(), "iscrowd": int(s["gt_crowd"][first_gt + k]),
                })
            for k in range(n_det):
                results.append({
                    "image_id": image_id, "category_id": int(s["det_labels"][first_det + k]),
                    "segmentation": {"size": [h, w], "counts": strings[first_mask + n_gt + k]},
                    "score": float(s["det_scores"][first_det + k]),
                })
            first_mask, first_gt, first_det = first_mask + n_gt + n_det, first_gt + n_gt, first_det + n_det
        categories = [{"id": c, "name": str(c)} for c in range(self.num_classes)]
        return {"images": images, "annotations": annotations, "categories": categories}, results

    def compute(self) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        dataset, results = self.coco_inputs()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            truth = COCO()
            truth.dataset = dataset
            truth.createIndex()
            if results:
                detections = truth.loadRes(results)
            else:  # loadRes cannot take an empty list; no detections is an empty result set
                detections = COCO()
                detections.dataset = {**dataset, "annotations": []}
                detections.createIndex()
            evaluation = COCOeval(truth, detections, "segm")
            evaluation.params.maxDets = [1, 10, self.max_detections]
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (iou, recall, class) at area all, max dets
        per_class = np.full(self.num_classes, np.nan)
        for k, class_id in enumerate(evaluation.params.catIds):
            values = precision[:, :, k]
            if (values > -1).any():
                per_class[class_id] = values[values > -1].mean()
        return np.asarray(evaluation.stats), per_class
