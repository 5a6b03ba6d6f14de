"""An encoder named by registry name and arguments: the form configs and checkpoints store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fusionseg.encoders.base import Encoder
from fusionseg.encoders.registry import build, parse_spec


@dataclass
class EncoderSpec:
    """`name` in the `fusionseg.encoders` registry plus keyword arguments for it.

    In YAML: `{name: dinov3, args: {size: base, weights: /weights/dinov3_vitb16.pth}}`;
    on the command line: `dinov3:size=base,weights=/weights/dinov3_vitb16.pth`.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # jsonargparse turns `--model.aux.args.weights null` into the string "None" when the spec
        # sits in an Optional field; no encoder argument means that string, so read it as None.
        self.args = {k: None if v in ("None", "null") else v for k, v in self.args.items()}

    @classmethod
    def parse(cls, value: EncoderSpec | dict[str, Any] | str) -> EncoderSpec:
        if isinstance(value, EncoderSpec):
            return value
        if isinstance(value, str):
            name, args = parse_spec(value)
            return cls(name, args)
        if isinstance(value, dict) and "name" in value and set(value) <= {"name", "args"}:
            return cls(value["name"], dict(value.get("args") or {}))
        raise ValueError(f"an encoder is given as 'NAME:key=value,...' or {{name: NAME, args: {{...}}}}; got {value!r}")

    def build(self, pretrained: bool = True) -> Encoder:
        """Build the encoder; `pretrained=False` skips the weights file (e.g. when a checkpoint has them)."""
        args = dict(self.args)
        if not pretrained:
            args.pop("weights", None)
        return build(self.name, **args)

    def __str__(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.name}:{args}" if args else self.name
