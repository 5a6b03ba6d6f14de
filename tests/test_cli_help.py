"""What a newcomer types first: `fusionseg --help`, `--version`, and `fusionseg encoders` on a default install."""

from __future__ import annotations

import json
import sys

import pytest

import fusionseg
from fusionseg.cli import LIGHTNING_COMMANDS, TOOL_COMMANDS, main, tool_summary


def test_help_lists_every_command_with_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    commands = out.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in commands}
    assert set(listed) == set(LIGHTNING_COMMANDS) | set(TOOL_COMMANDS)
    assert {"fit", "validate", "test", "predict", "profile", "encoders"} <= set(listed)
    assert all(len(text) > 10 and "`" not in text for text in listed.values())  # a sentence, no docstring markup
    assert "--version" in out and "configs/demo.yaml" in out
    assert main([]) == 0 and "commands:" in capsys.readouterr().out


def test_tool_lines_come_from_their_module_docstrings() -> None:
    assert tool_summary("fusionseg.commands.profile").startswith("score encoders per stride")
    assert "install" in tool_summary("fusionseg.commands.encoders")


def test_version_names_fusionseg_torch_and_lightning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"fusionseg {fusionseg.__version__} (torch ") and "lightning" in out


def test_an_unknown_command_names_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "fit" in err and "encoders" in err


def test_encoders_without_sam2_says_how_to_install_it_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sam2", None)  # as on the README's default install: `import sam2` fails
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    assert "sam2  (fusionseg" in out and "not installed" in out
    assert 'pip install "fusionseg[sam2]"' in out and "ERROR" not in out
    assert "regions  (fusionseg" in out and "encoders ready; to install the rest: sam2" in out

    assert main(["encoders", "--json", "sam2", "edges"]) == 0
    sam2, edges = json.loads(capsys.readouterr().out)
    assert sam2["missing"] == "sam2" and sam2["install"].startswith('pip install "fusionseg[sam2]"')
    assert "error" not in sam2 and edges["pyramid"]["32"] == 64
