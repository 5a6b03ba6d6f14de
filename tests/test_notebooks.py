"""The notebooks run top to bottom (fast settings, one CPU thread) and produce what they promise.

Each notebook is executed with nbclient in a temporary working copy, on a kernel that runs this very
interpreter (a kernel spec written to the temporary folder, so nothing lands in the user's home).
`FUSIONSEG_NOTEBOOK_FAST=1` shrinks the notebooks' settings; `FUSIONSEG_NOTEBOOK_OUT` sends their files
to the temporary folder. The stored notebooks carry small outputs (notebooks/store_outputs.py writes them), so
they read on a code host without running.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fusionseg.plan import FusionPlan

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
KERNEL = "fusionseg-test-python"


def _kernel_env(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel spec for `sys.executable`, and Jupyter/IPython state folders, all under `root`."""
    spec_dir = root / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fusionseg tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(root / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("IPYTHONDIR", str(root / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(root / "matplotlib"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("FUSIONSEG_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("FUSIONSEG_NOTEBOOK_OUT", str(root / "out"))
    monkeypatch.setenv("FUSIONSEG_PROFILE_CACHE", str(root / "profile_cache"))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread in the kernel, as in the other tests
        monkeypatch.setenv(var, "1")


def run_notebook(name: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Execute a copy of `notebooks/<name>` in `root/work`; returns the executed notebook."""
    _kernel_env(root, monkeypatch)
    work = root / "work"
    work.mkdir()
    shutil.copy(NOTEBOOKS / name, work / name)
    nb = nbformat.read(work / name, as_version=4)
    client = NotebookClient(nb, timeout=240, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}})
    client.execute()
    return nb


def stream_text(nb: nbformat.NotebookNode) -> str:
    """Everything the cells printed."""
    return "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
        if out.output_type == "stream"
    )


def image_outputs(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )


MAX_NOTEBOOK_BYTES = 450_000
MAX_PICTURE_BYTES = 120_000  # base64 characters of one stored picture


@pytest.mark.parametrize("name", ["profile_encoders.ipynb", "fused_training.ipynb"])
def test_stored_notebooks_carry_small_outputs_that_read_without_running(name: str) -> None:
    """Stored by notebooks/store_outputs.py: every code cell ran in order, text and a few small pictures,
    no warnings, errors or paths of the machine that ran them."""
    path = NOTEBOOKS / name
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{name} is {path.stat().st_size} bytes; rerun store_outputs.py"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), f"{name}: run top to bottom"
    outputs = [out for cell in code for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error" or out.get("name") == "stderr"]
    pictures = [data for out in outputs for mime, data in out.get("data", {}).items() if mime.startswith("image/")]
    assert 1 <= len(pictures) <= 6 and all(len(p) < MAX_PICTURE_BYTES for p in pictures)
    text = stream_text(nb)
    assert text.strip(), f"{name} stores no printed output"
    for local in ("/tmp/", "/home/", "/work/", "/root/", "site-packages"):
        assert local not in text, f"{name} stores a local path ({local}...): {text[:300]}"


@pytest.mark.slow
def test_profile_encoders_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = run_notebook("profile_encoders.ipynb", tmp_path, monkeypatch)
    text = stream_text(nb)
    out = tmp_path / "out" / "profile_encoders"

    # The SC/EF table covers every encoder at every stride, and the plans are printed and saved.
    for expected in ("edges", "regions", "resnet18-random", "OS 4", "OS 32", "semantic -> master=regions"):
        assert expected in text, f"{expected!r} not printed; output was:\n{text}"
    semantic = FusionPlan.load(out / "plan_semantic.json")
    assert semantic.master == "regions" and semantic.aux in {"edges", "resnet18-random"}
    assert len(semantic.strides) == 1 and semantic.strides[0] in (4, 8, 16, 32)
    edge = FusionPlan.load(out / "plan_edge.json")
    assert edge.task == "edge" and edge.master != edge.aux

    # The figure and the maps were drawn (and shown inline).
    assert (out / "profile.png").stat().st_size > 0
    assert len(list(out.glob("maps_*.png"))) == 3  # one contact sheet per encoder
    assert image_outputs(nb) >= 3  # photographs, profile figure, maps


@pytest.mark.slow
def test_fused_training_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = run_notebook("fused_training.ipynb", tmp_path, monkeypatch)
    text = stream_text(nb)
    summary = json.loads((tmp_path / "out" / "fused_training" / "summary.json").read_text())

    # The profiler chose the plan the metrics predict: regions (structure) master, edges (edges) aux.
    plan = FusionPlan.from_dict(summary["plan"])
    assert (plan.master, plan.aux) == ("regions", "edges") and len(plan.strides) == 1
    assert "plan: master=regions aux=edges" in text and "plan: master=regions (single encoder" in text

    # Both models were trained and validated, and predicted one class map per image at its original size.
    for name in ("fused", "master_only"):
        assert 0.0 <= summary["results"][name]["mIoU"] <= 100.0
    for name in ("fused", "master only"):
        assert summary["prediction_shapes"][name] == summary["image_sizes"]
    assert (tmp_path / "out" / "fused_training" / "predictions.png").stat().st_size > 0
    assert image_outputs(nb) >= 2  # the data and the predictions
