"""docs/reproduce.md: every command parses with the real configs and keys (`--print_config`), names
registered encoders and plans that fit them, and keeps each run in its own folder; the RQ5 export snippet
turns a checkpoint into a SAM2 weight file that `SAM2Encoder` loads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from fusionseg.commands.profile import parse_args as parse_profile_args
from fusionseg.encoders import EncoderSpec, available
from fusionseg.lightning_cli import FusionSegCLI
from fusionseg.plan import FusionPlan

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).parents[1]
DOC = REPO / "docs" / "reproduce.md"
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# Every row of the paper's tables that fusionseg can run has a training run in one of these folders.
EXPECTED_RUNS = {
    *(f"runs/coco_instance{s}" for s in ("", "_d3", "_s2", "_swinb")),
    *(f"runs/{c}{s}" for c in ("ade20k", "kitti360_instance", "coco_panoptic", "cityscapes_instance",
                               "cityscapes_semantic", "urbansyn_to_cityscapes_instance",
                               "synscapes_to_cityscapes_instance") for s in ("", "_d3", "_s2")),
    *(f"runs/stride_{setting}_os{stride}" for setting in "ABCD" for stride in (4, 8, 16, 32)),
    "runs/rq5_sam2_ft",
    "runs/rq5_aux_ft",
}


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def doc_commands() -> list[list[str]]:
    """The `fusionseg ...` lines of the bash blocks, split as a shell would (without `fusionseg`)."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("fusionseg "):
                commands.append(shlex.split(line)[1:])
    return commands


def printed_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as done:
        FusionSegCLI(args=[*args, "--print_config"])
    assert done.value.code in (0, None), f"fusionseg {shlex.join(args)} does not parse"
    return yaml.safe_load(capsys.readouterr().out)


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def check_model(model: dict, data: dict, command: str) -> None:
    """Encoders are registered and read local weights; the plan fits the encoders and the task."""
    master = EncoderSpec.parse(model["master"])
    aux = EncoderSpec.parse(model["aux"]) if model["aux"] is not None else None
    for spec in filter(None, (master, aux)):
        assert spec.name in available(), f"{command}: unknown encoder {spec.name!r}"
        assert str(spec.args.get("weights", "/weights/")).startswith("/weights/"), command
    plan = model["plan"]
    if plan is None:
        assert aux is None, f"{command}: plan null (master alone) needs aux null"
    elif plan == "auto":
        assert aux is not None, f"{command}: plan auto needs an auxiliary encoder"
    else:
        fixed = FusionPlan.from_dict(plan)
        assert aux is not None and (fixed.master, fixed.aux) == (master.name, aux.name), command
        assert fixed.task == data["task"] and set(fixed.strides) <= {4, 8, 16, 32}, command
    assert data["root"].startswith("/data/"), command


def test_every_lightning_command_parses_and_every_run_has_its_own_folder(monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the commands name configs/... relative to the repository
    commands = [c for c in doc_commands() if c[0] in LIGHTNING_SUBCOMMANDS]
    fits = [c for c in commands if c[0] == "fit"]
    assert len(fits) >= len(EXPECTED_RUNS)
    roots: dict[str, str] = {}
    evaluated_shapes: set[tuple[str, ...]] = set()
    for args in commands:
        command = "fusionseg " + shlex.join(args)
        config = printed_config(args, capsys)
        check_model(config["model"], config["data"], command)
        root = config["trainer"]["default_root_dir"]
        if args[0] == "fit":
            assert root not in roots, f"{command} writes to {root}, as does: {roots.get(root)}"
            roots[root] = command
            # The page's rule for evaluating a row: `validate` and the run's last.ckpt. Checked once per set of options.
            shape = tuple(sorted(a for a in args if a.startswith("--")))
            if shape not in evaluated_shapes:
                evaluated_shapes.add(shape)
                validate = ["validate", *args[1:], "--ckpt_path", f"{root}/checkpoints/last.ckpt"]
                assert printed_config(validate, capsys)["ckpt_path"] == f"{root}/checkpoints/last.ckpt"
        else:
            assert option(args, "--ckpt_path") == f"{root}/checkpoints/last.ckpt", command
    assert EXPECTED_RUNS <= set(roots), f"rows without a training command: {sorted(EXPECTED_RUNS - set(roots))}"


def test_every_profile_command_parses():
    commands = [c for c in doc_commands() if c[0] == "profile"]
    assert len(commands) >= 3  # the SC/EF table and RQ5's two profiles
    for args in commands:
        parsed = parse_profile_args(args[1:])
        for spec in map(EncoderSpec.parse, parsed.encoders):
            assert spec.name in available() and str(spec.args["weights"]).startswith("/weights/")
        assert (REPO / parsed.data).is_file(), f"{shlex.join(args)}: no config {parsed.data}"


def test_rq5_export_snippet_writes_weights_sam2_loads(tmp_path):
    pytest.importorskip("sam2", reason="the RQ5 recipe exports a SAM2 encoder: pip install 'fusionseg[sam2]'")
    from fusionseg.encoders.sam2_hiera import SAM2Encoder
    from fusionseg.module import FusedSegModule

    (snippet,) = [b for b in code_blocks("python") if "pyramid.master." in b]
    ckpt_literal, out_literal = re.findall(r'^(?:ckpt_path|out_path) = ("[^"]+")$', snippet, flags=re.M)
    commands = [shlex.join(c) for c in doc_commands()]
    # The snippet reads the RQ5 training run's checkpoint and writes the file the RQ5 profile reads.
    assert any("--trainer.default_root_dir runs/rq5_sam2_ft" in c for c in commands)
    assert ckpt_literal.strip('"').startswith("runs/rq5_sam2_ft/checkpoints/")
    exported = out_literal.strip('"')
    assert any(f"weights={exported}" in c for c in commands if c.startswith("profile"))

    module = FusedSegModule(master="sam2:size=tiny", aux=None, plan=None, num_classes=2,
                            head=dict(num_queries=2, dec_layers=1, enc_layers=1, hidden_dim=32, num_heads=2,
                                      dim_feedforward=32, enc_feedforward=32, train_points=16))
    with torch.no_grad():  # weights that differ from any fresh initialization
        for p in module.master.parameters():
            p.add_(torch.randn_like(p))
    ckpt, out = tmp_path / "last.ckpt", tmp_path / "sam2_ft.pt"
    torch.save({"state_dict": module.state_dict()}, ckpt)
    exec(snippet.replace(ckpt_literal, repr(str(ckpt))).replace(out_literal, repr(str(out))), {})

    loaded = SAM2Encoder(size="tiny", weights=out)
    expected = module.master.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
