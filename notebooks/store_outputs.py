"""Run the notebooks and store them with small outputs, so they read on a code host without running.

    .venv/bin/python notebooks/store_outputs.py                       # both, their default settings
    FUSIONSEG_NOTEBOOK_FAST=1 .venv/bin/python notebooks/store_outputs.py fused_training.ipynb

Each notebook runs in a temporary copy of this folder (its `runs/` output stays there) on a kernel of
this interpreter. Kept: printed text and pictures, pictures shrunk to at most `MAX_WIDTH` pixels (256-colour
PNG, or JPEG where much smaller); dropped: warnings (stderr), timings, and absolute paths of this machine. An error in any
cell stops without writing. tests/test_notebooks.py checks that the stored outputs stay small.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NOTEBOOKS = ("profile_encoders.ipynb", "fused_training.ipynb")
MAX_WIDTH = 760
KERNEL = "fusionseg-store-python"


def small_picture(data: str, max_width: int = MAX_WIDTH) -> tuple[str, str]:
    """`(mime type, base64)` of a PNG output shrunk to `max_width`: a 256-colour PNG, or a JPEG when that is
    much smaller (photographs and feature maps)."""
    picture = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    if picture.width > max_width:
        picture = picture.resize((max_width, round(picture.height * max_width / picture.width)), Image.LANCZOS)
    png, jpeg = io.BytesIO(), io.BytesIO()
    picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(png, format="PNG", optimize=True)
    picture.save(jpeg, format="JPEG", quality=82, optimize=True)
    if jpeg.tell() < 0.6 * png.tell():
        return "image/jpeg", base64.b64encode(jpeg.getvalue()).decode()
    return "image/png", base64.b64encode(png.getvalue()).decode()


def clean(nb: nbformat.NotebookNode, local_paths: list[str]) -> nbformat.NotebookNode:
    """Outputs a reader needs: stdout and pictures (shrunk); no stderr, timings or local paths."""
    def strip(text: str) -> str:
        for path in local_paths:
            text = text.replace(path + os.sep, "").replace(path, ".")
        return text

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                continue
            if out.output_type == "stream":
                out.text = strip(out.text)
            if "data" in out:
                if "image/png" in out.data:
                    mime, data = small_picture(out.data["image/png"])
                    out.data = {mime: data}  # the text repr ("<Figure ...>") is noise
                elif "text/plain" in out.data:
                    out.data["text/plain"] = strip(out.data["text/plain"])
            kept.append(out)
        cell.outputs = kept
    return nb


def run(name: str) -> nbformat.NotebookNode:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = root / "jupyter" / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "fusionseg", "language": "python"}))
        env = {"JUPYTER_PATH": root / "jupyter", "JUPYTER_RUNTIME_DIR": root / "runtime",
               "JUPYTER_DATA_DIR": root / "data", "IPYTHONDIR": root / "ipython", "MPLCONFIGDIR": root / "mpl",
               "FUSIONSEG_PROFILE_CACHE": root / "profile_cache"}
        os.environ.update({k: str(v) for k, v in env.items()})
        os.environ.pop("FUSIONSEG_NOTEBOOK_OUT", None)
        work = root / "notebooks"
        work.mkdir()
        shutil.copy(HERE / name, work / name)
        nb = nbformat.read(work / name, as_version=4)
        NotebookClient(nb, timeout=3600, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}}).execute()
        return clean(nb, [str(work), str(root), str(REPO)])


def main(names: list[str]) -> int:
    for name in names or NOTEBOOKS:
        nb = run(name)
        nb.metadata.pop("widgets", None)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print(f"stored {name}: {(HERE / name).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
