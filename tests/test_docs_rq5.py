"""docs/reproduce.md, RQ5: the fused run with a fine-tuned auxiliary trains SAM2 (`freeze_aux: false`), and the
snippet that exports its auxiliary writes a file `SAM2Encoder` loads with exactly the trained weights, which the
RQ5 profile then reads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from test_docs_reproduce import code_blocks, doc_commands, printed_config

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

RUN = "runs/rq5_aux_ft"


def test_the_rq5_fused_run_fine_tunes_the_auxiliary(monkeypatch, capsys) -> None:
    monkeypatch.chdir(Path(__file__).parents[1])  # the command names configs/... relative to the repository
    (args,) = [c for c in doc_commands() if c[0] == "fit" and RUN in c]
    model = printed_config(args, capsys)["model"]
    assert model["freeze_aux"] is False and model["aux_lr_mult"] == 0.1
    assert model["aux"]["name"] == "sam2" and model["plan"] == "auto"


def test_the_aux_export_snippet_writes_weights_sam2_loads(tmp_path) -> None:
    pytest.importorskip("sam2", reason="the RQ5 recipe exports a SAM2 encoder: pip install 'fusionseg[sam2]'")
    from fusionseg.encoders.sam2_hiera import SAM2Encoder
    from fusionseg.module import FusedSegModule

    (snippet,) = [b for b in code_blocks("python") if "pyramid.aux." in b]
    ckpt_literal, out_literal = re.findall(r'^(?:ckpt_path|out_path) = ("[^"]+")$', snippet, flags=re.M)
    assert ckpt_literal.strip('"').startswith(f"{RUN}/checkpoints/")
    exported = out_literal.strip('"')
    profiles = [shlex.join(c) for c in doc_commands() if c[0] == "profile"]
    assert any(f"weights={exported}" in c for c in profiles), "no RQ5 profile reads the exported auxiliary"

    module = FusedSegModule(master="regions:channels=16", aux="sam2:size=tiny", freeze_aux=False, aux_lr_mult=0.1,
                            plan={"master": "regions", "aux": "sam2", "strides": [16], "task": "semantic"},
                            num_classes=2, head=dict(num_queries=2, dec_layers=1, enc_layers=1, hidden_dim=32,
                                                     num_heads=2, dim_feedforward=32, enc_feedforward=32,
                                                     train_points=16))
    assert not module.aux.frozen
    with torch.no_grad():  # weights that differ from any fresh initialization, as after fine-tuning
        for p in module.aux.parameters():
            p.add_(torch.randn_like(p))
    ckpt, out = tmp_path / "last.ckpt", tmp_path / "aux_ft.pt"
    torch.save({"state_dict": module.state_dict()}, ckpt)
    exec(snippet.replace(ckpt_literal, repr(str(ckpt))).replace(out_literal, repr(str(out))), {})

    loaded = SAM2Encoder(size="tiny", weights=out)
    expected, got = module.aux.state_dict(), loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
