"""The GPU image definition stays valid: hadolint (installed with the dev extra) finds nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_a_non_root_user_with_the_cli_as_entry_point() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 1000:1000" in text and 'ENTRYPOINT ["fusionseg"]' in text
    assert all(f'"{m}"' in text for m in ("/data", "/weights", "/outputs"))
