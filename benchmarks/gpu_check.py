"""Steps of benchmarks/gpu_check.sh that need Python: environment, k-means check, a tiny ADE20K, fit timing, summary.

    python benchmarks/gpu_check.py env OUT.json
    python benchmarks/gpu_check.py kmeans OUT.json [--dry-run]
    python benchmarks/gpu_check.py ade20k ROOT [--dry-run]          # writes ROOT/ADEChallengeData2016
    python benchmarks/gpu_check.py summary WORK_DIR OUT.json

`StepStats` is a Lightning callback that `fusionseg fit --trainer.callbacks+=gpu_check.StepStats` adds
(with `benchmarks/` on PYTHONPATH): step times and peak GPU memory, written to `$GPU_CHECK_FIT_JSON`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

KMEANS_OBJECTIVE_TOLERANCE = 0.01  # GPU and CPU k-means objectives agree within 1%
FAISS_GPU_MIN_SPEEDUP = 10.0  # faiss on the GPU at least 10x the CPU path at 256 x 128 x 128
KMEANS_SHAPE = {"full": (256, 128, 128), "dry": (32, 16, 16)}
ADE_SIZES = {"full": dict(train=32, val=4, size=512), "dry": dict(train=4, val=2, size=96)}


def _write(path: str | Path, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# -- environment -------------------------------------------------------------------------------------
def environment() -> dict:
    import faiss

    from fusionseg.metrics import faiss_has_gpu

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "faiss": faiss.__version__, "cuda_available": torch.cuda.is_available(),
                            "faiss_gpu": faiss_has_gpu(), "cpu_cores": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


# -- k-means: faiss on the GPU against the CPU; SCS's batched k-means on both ------------------------------
def _feature_rows(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """The standardized `(h*w, c)` rows of a map with segments, a smooth field and noise."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_metrics import synthetic_features

    rows = synthetic_features(c, h, w, seed).flatten(1).t()
    return (rows - rows.mean(0)) / (rows.std(0, correction=0) + 1e-6)


def _inertia(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum of squared distances of the rows to their cluster's mean (float64), whatever found the labels."""
    x = x.double().cpu()
    labels = labels.cpu().long()
    k = int(labels.max()) + 1
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k).clamp_min(1)[:, None]
    return float(((x - (sums / counts)[labels]) ** 2).sum())


def _timed(fn, device: torch.device, repeats: int) -> tuple[Any, float]:
    """The result of `fn()` and its median wall time over `repeats` calls after a warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def kmeans_check(dry_run: bool) -> dict:
    """faiss k-means (fusionseg.metrics.kmeans) on the GPU vs the CPU, and SCS's batched k-means on both."""
    import faiss

    from fusionseg.metrics import batched_kmeans, faiss_has_gpu, kmeans

    gpu = torch.device("cuda") if torch.cuda.is_available() and not dry_run else torch.device("cpu")
    cpu = torch.device("cpu")
    c, h, w = KMEANS_SHAPE["dry" if dry_run else "full"]
    k, repeats = 10, 1 if dry_run else 3
    x = _feature_rows(c, h, w)
    out: dict[str, Any] = {"shape": [c, h, w], "rows": list(x.shape), "k": k, "compared_device": gpu.type,
                           "faiss_gpu": faiss_has_gpu(), "faiss_cpu_threads": faiss.omp_get_max_threads()}
    # Every row trains (faiss's default would learn on 256 rows per cluster, a few ms on any device).
    def run(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return kmeans(rows, k, seed=0, max_points_per_centroid=rows.shape[0])

    (_, cpu_labels), cpu_s = _timed(lambda: run(x), cpu, repeats)
    faiss_gpu_used = gpu.type == "cuda" and faiss_has_gpu()
    if gpu.type == "cpu" or faiss_gpu_used:
        xg = x.to(gpu)
        (_, gpu_labels), gpu_s = _timed(lambda: run(xg), gpu, repeats)
        cpu_obj, gpu_obj = _inertia(x, cpu_labels), _inertia(x, gpu_labels)
        rel = abs(gpu_obj - cpu_obj) / cpu_obj
        out["faiss"] = {"cpu_s": cpu_s, "gpu_s": gpu_s, "speedup": cpu_s / gpu_s, "cpu_objective": cpu_obj,
                        "gpu_objective": gpu_obj, "relative_objective_difference": rel,
                        "objective_within_1pct": rel <= KMEANS_OBJECTIVE_TOLERANCE,
                        "speedup_at_least_10x": cpu_s / gpu_s >= FAISS_GPU_MIN_SPEEDUP}
    else:
        out["faiss"] = {"skipped": "faiss has no GPU support here (faiss-cpu); install faiss-gpu-cu12 to check it",
                        "cpu_s": cpu_s}
    # What SCS runs: batched k-means of 16 maps' PCA rows (4096 x 32), k = 6, 8, 10, on each device.
    maps, rows, dims = (2, 256, 8) if dry_run else (16, 4096, 32)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(maps, rows, dims, generator=gen) * torch.linspace(3, 0.3, dims)
    batch[:, : rows // 2] += 2.0  # two dense groups
    ks = (6, 8, 10)
    cpu_lab, cpu_t = _timed(lambda: batched_kmeans(batch, ks), cpu, repeats)
    gpu_lab, gpu_t = _timed(lambda: batched_kmeans(batch.to(gpu), ks), gpu, repeats)
    cpu_obj = sum(_inertia(batch[i], cpu_lab[i, :, j]) for i in range(maps) for j in range(len(ks)))
    gpu_obj = sum(_inertia(batch[i], gpu_lab[i, :, j]) for i in range(maps) for j in range(len(ks)))
    rel = abs(gpu_obj - cpu_obj) / cpu_obj
    out["scs_batched"] = {"maps": maps, "rows": rows, "dims": dims, "ks": list(ks), "cpu_s": cpu_t, "gpu_s": gpu_t,
                          "speedup": cpu_t / gpu_t, "relative_objective_difference": rel,
                          "objective_within_1pct": rel <= KMEANS_OBJECTIVE_TOLERANCE}
    return out


# -- a tiny ADE20K in the official layout ----------------------------------------------------------------
def write_ade20k(root: Path, train: int, val: int, size: int, seed: int = 0) -> Path:
    """`root/ADEChallengeData2016` with `images/{training,validation}/ADE_*.jpg` and `annotations/.../ADE_*.png`
    (0 = unlabeled, 1..150 = classes): rectangles of a few classes on a background class."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    for split, folder, prefix, count in (("train", "training", "ADE_train", train),
                                         ("val", "validation", "ADE_val", val)):
        (base / "images" / folder).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            h, w = size, size + size // 4
            label = np.full((h, w), rng.integers(1, 151), dtype=np.uint8)
            image = np.empty((h, w, 3), dtype=np.uint8)
            image[:] = rng.integers(0, 256, 3)
            for _ in range(int(rng.integers(2, 6))):
                y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
                hh, ww = rng.integers(h // 8, h // 2), rng.integers(w // 8, w // 2)
                label[y : y + hh, x : x + ww] = rng.integers(1, 151)
                image[y : y + hh, x : x + ww] = rng.integers(0, 256, 3)
            label[rng.random((h, w)) < 0.01] = 0  # a few unlabeled pixels, as in the real annotations
            noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(base / "images" / folder / f"{prefix}_{i:08d}.jpg", quality=90)
            Image.fromarray(label).save(base / "annotations" / folder / f"{prefix}_{i:08d}.png")
    return base


# -- fit timing --------------------------------------------------------------------------------------------
class StepStats(Callback):
    """Wall time of each training step (synchronized on a GPU), peak GPU memory; JSON to `$GPU_CHECK_FIT_JSON`."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0
        self._fit_start = 0.0

    def _sync(self, trainer: Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._sync(trainer)
        self.times.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        steady = self.times[3:] or self.times  # the first steps pay for kernel selection and allocator growth
        out = {"steps": len(self.times), "step_s_median": statistics.median(steady), "step_s_min": min(steady),
               "first_step_s": self.times[0], "fit_wall_s": time.perf_counter() - self._fit_start,
               "device": str(trainer.strategy.root_device), "precision": str(trainer.precision)}
        if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
            out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            out["gpu"] = torch.cuda.get_device_name(trainer.strategy.root_device)
        path = os.environ.get("GPU_CHECK_FIT_JSON")
        if path:
            _write(path, out)


# -- summary -------------------------------------------------------------------------------------------------
def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summary(work: Path, dry_run: bool = False) -> dict:
    """Every step's status and results, and the pass/fail of each target of issue 17.

    A dry run runs every step on the CPU at tiny sizes: its targets say nothing about a GPU.
    """
    steps = {p.name[: -len(".status.json")]: json.loads(p.read_text()) for p in sorted(work.glob("*.status.json"))}
    km = _load(work / "kmeans.json") or {}
    metrics = _load(work / "metrics_cuda.json") or _load(work / "metrics_cpu.json")
    train = next((json.loads(p.read_text()) for p in sorted(work.glob("train_step_*.json"))), None)
    profile = next((json.loads(p.read_text()) for p in sorted(work.glob("profile_*.json"))), None)
    fit = _load(work / "fit.json")
    faiss = km.get("faiss", {})
    targets = {
        "faiss_gpu_objective_within_1pct": faiss.get("objective_within_1pct"),
        "faiss_gpu_at_least_10x_cpu": faiss.get("speedup_at_least_10x"),
        "scs_kmeans_gpu_objective_within_1pct": km.get("scs_batched", {}).get("objective_within_1pct"),
        "fused_step_within_1.10x_transformers_plus_aux": (train or {}).get("verdicts", {}).get("fused_within_budget"),
        "profile_metrics_within_25pct_of_forward": (profile or {}).get("verdicts", {}).get("metrics_within_target"),
        "profile_pass_under_60s": (profile or {}).get("verdicts", {}).get("pass_within_target"),
        "fit_20_steps_ran": fit is not None and fit.get("steps", 0) > 0,
    }
    return {"dry_run": dry_run, "environment": _load(work / "env.json"), "steps": steps,
            "steps_failed": [name for name, st in steps.items() if st["rc"] != 0], "targets": targets,
            "all_targets_met": all(v is True for v in targets.values() if v is not None),
            "not_checked": [k for k, v in targets.items() if v is None],
            "kmeans": km, "metrics": metrics, "train_step": train, "profile": profile, "fit": fit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env").add_argument("out", type=Path)
    km = sub.add_parser("kmeans")
    km.add_argument("out", type=Path)
    km.add_argument("--dry-run", action="store_true")
    ade = sub.add_parser("ade20k")
    ade.add_argument("root", type=Path)
    ade.add_argument("--dry-run", action="store_true")
    summ = sub.add_parser("summary")
    summ.add_argument("work", type=Path)
    summ.add_argument("out", type=Path)
    summ.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "env":
        _write(args.out, environment())
    elif args.command == "kmeans":
        result = kmeans_check(args.dry_run)
        _write(args.out, result)
        print(json.dumps(result, indent=2))
    elif args.command == "ade20k":
        print(write_ade20k(args.root, **ADE_SIZES["dry" if args.dry_run else "full"]))
    else:
        result = summary(args.work, args.dry_run)
        _write(args.out, result)
        keys = ("dry_run", "targets", "all_targets_met", "not_checked", "steps_failed", "steps")
        print(json.dumps({k: result[k] for k in keys}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
