"""The example plugin, once installed, is an encoder like the built-ins: found, built, listed, tested."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from fusionseg.encoders import GROUP, available, build

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "fusionseg-plugin-example"
NAME = "example_conv"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Where the plugin is installed: CI installs it; otherwise pip installs it into a temporary folder here."""
    if NAME in available():
        yield ""
        return
    source = tmp_path_factory.mktemp("src") / PLUGIN.name  # a copy, so the build leaves nothing in the repo
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(target))
        yield str(target)


def test_installed_plugin_is_registered_by_its_package(plugin_path: str) -> None:
    assert NAME in available()
    (ep,) = [ep for ep in entry_points(group=GROUP) if ep.name == NAME]
    assert ep.dist is not None and ep.dist.name == "fusionseg-plugin-example"


def test_plugin_encoder_builds_and_follows_the_contract(plugin_path: str) -> None:
    enc = build(NAME, width=4)
    out = enc(enc.normalize(torch.rand(1, 3, 40, 72)))
    assert {s: tuple(f.shape[1:]) for s, f in out.items()} == {4: (4, 10, 18), 8: (8, 5, 9), 16: (16, 3, 5),
                                                               32: (32, 2, 3)}


def test_plugin_passes_its_own_tests(plugin_path: str) -> None:
    pythonpath = os.pathsep.join(p for p in (plugin_path, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        cwd=PLUGIN, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
