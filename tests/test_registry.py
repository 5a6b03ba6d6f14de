"""The registry and `fusionseg encoders`: every built-in is listed, and every failure names its cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionseg.cli import main as fusionseg
from fusionseg.encoders import EncoderPluginError, UnknownEncoderError, available, build

BUILT_INS = {"dinov3", "edges", "regions", "sam2", "timm"}


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution whose `fusionseg.encoders` entry point names a module that does not exist."""
    dist_info = tmp_path / "broken_vision_plugin-0.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-vision-plugin\nVersion: 0.3\n")
    (dist_info / "entry_points.txt").write_text("[fusionseg.encoders]\nbroken = broken_vision_plugin.nowhere:Encoder\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "broken"


def test_builtins_are_registered_through_entry_points() -> None:
    assert BUILT_INS <= set(available())


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(UnknownEncoderError, match=r"unknown encoder 'dinov4'; available: .*dinov3.*sam2.*timm"):
        build("dinov4")


def test_a_plugin_that_fails_to_import_names_the_plugin_and_its_package(broken_plugin: str) -> None:
    assert broken_plugin in available()
    with pytest.raises(EncoderPluginError, match=r"'broken' is registered by broken-vision-plugin 0\.3 as "
                                                 r"'broken_vision_plugin\.nowhere:Encoder'.*ModuleNotFoundError"):
        build(broken_plugin)


def test_bad_arguments_are_reported_with_the_signature() -> None:
    with pytest.raises(TypeError, match=r"'sam2' does not take \['layers'\].*It takes sam2\(size.*weights"):
        build("sam2", layers=3)


def test_encoders_command_lists_every_builtin_with_its_pyramid(capsys: pytest.CaptureFixture[str]) -> None:
    assert fusionseg(["encoders", "--json"]) == 0
    listed = {info["name"]: info for info in json.loads(capsys.readouterr().out)}
    assert BUILT_INS <= set(listed)
    assert listed["dinov3"]["pyramid"] == {"4": 192, "8": 384, "16": 768, "32": 768}
    assert listed["sam2"]["pyramid"] == {"4": 112, "8": 224, "16": 448, "32": 896}  # Hiera-B+ trunk
    assert listed["timm"]["pyramid"] == {"4": 256, "8": 512, "16": 1024, "32": 2048}
    assert listed["dinov3"]["package"].startswith("fusionseg ")
    assert all("error" not in info for info in listed.values())


def test_encoders_command_describes_a_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert fusionseg(["encoders", "timm:model_name=vit_small_patch16_224,weights=/not/read.pth"]) == 0
    text = capsys.readouterr().out
    assert "stride 4: 96 ch, stride 8: 192 ch, stride 16: 384 ch, stride 32: 384 ch" in text
    assert "weights are not read" in text


def test_a_failing_encoder_is_listed_with_its_error_and_the_others_still_print(
    broken_plugin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fusionseg(["encoders"]) == 1
    out = capsys.readouterr()
    assert "broken  (broken-vision-plugin 0.3)\n  ERROR: EncoderPluginError" in out.out
    assert "regions  (fusionseg" in out.out and "stride 32: 64 ch" in out.out
    assert "1 of" in out.err and "broken" in out.err
