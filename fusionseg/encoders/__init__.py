"""Encoders: the contract, the entry-point registry, and the built-in encoders.

>>> from fusionseg import encoders
>>> "edges" in encoders.available()
True
>>> enc = encoders.build("regions", channels=32)
>>> enc.pyramid
{4: 32, 8: 32, 16: 32, 32: 32}
"""

from fusionseg.encoders.base import IMAGENET_MEAN, IMAGENET_STD, REQUIRED_STRIDES, Encoder
from fusionseg.encoders.registry import (
    GROUP,
    EncoderPluginError,
    UnknownEncoderError,
    available,
    build,
    encoder_class,
    parse_spec,
)
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.encoders.weights import WeightsError, load_matching, read_state_dict

__all__ = [
    "GROUP",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REQUIRED_STRIDES",
    "Encoder",
    "EncoderPluginError",
    "EncoderSpec",
    "UnknownEncoderError",
    "WeightsError",
    "available",
    "build",
    "encoder_class",
    "load_matching",
    "parse_spec",
    "read_state_dict",
]
