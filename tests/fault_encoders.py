"""Encoders that misbehave on purpose, for the fault tests: registered under the `fusionseg.encoders`
entry-point group by the `broken_encoders` fixture (`tests/test_fault_cli.py`)."""

from __future__ import annotations

from torch import Tensor

from fusionseg.encoders.reference import RegionsEncoder


class NaNRegions(RegionsEncoder):
    """The `regions` reference encoder, with every feature map NaN (a broken checkpoint or an fp16 overflow)."""

    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        return {s: f * float("nan") for s, f in super().forward_features(x).items()}
