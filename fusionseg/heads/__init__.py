"""Segmentation heads: Mask2Former (built on transformers' modules) and its inference for all three tasks."""

from fusionseg.heads.config import HeadConfig
from fusionseg.heads.mask2former import HEAD_STRIDES, Mask2FormerHead, Mask2FormerOutput
from fusionseg.heads.postprocess import instance_inference, panoptic_inference, postprocess, semantic_inference

__all__ = [
    "HEAD_STRIDES",
    "HeadConfig",
    "Mask2FormerHead",
    "Mask2FormerOutput",
    "instance_inference",
    "panoptic_inference",
    "postprocess",
    "semantic_inference",
]
