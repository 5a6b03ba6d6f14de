"""fusionseg: fuse visual foundation models for segmentation, guided by label-free metrics."""

__version__ = "0.1.0"
