"""The profiling pass before the first training step, as MetricProfiler runs it, timed in parts.

MetricProfiler (fusionseg/callbacks/profiler.py) measures both encoders on `num_batches` batches of the
training data before the first step: per batch and encoder, the forward pass (eval mode, no gradients,
under the run's precision) and `ProfileAccumulator.update` (the per-image metrics of every stride);
then `ProfileAccumulator.compute` gathers the values of every process. This benchmark runs exactly
those calls on random images and times the three parts:

* forward: `encoder(encoder.normalize(images))`, under bf16 autocast on a GPU (the configs' bf16-mixed);
* metrics: `ProfileAccumulator.update(feats, images, image_sizes, order)`;
* gather: `ProfileAccumulator.compute()` and the conversion to lists that MetricProfiler does.

Targets: metrics at most 25% of the forward time on the same device (the forward pass is the floor),
and the whole pass under 60 s on one GPU.

    .venv/bin/python benchmarks/bench_profile.py                 # cpu preset: DINOv3-B + SAM2.1 Hiera-B+, 512x512
    .venv/bin/python benchmarks/bench_profile.py --preset gpu    # the same on CUDA, batches of 16, bf16
    .venv/bin/python benchmarks/bench_profile.py --dry-run       # tiny encoders and images, seconds on a CPU

Times on the CPU are CPU time of the main thread with one intra-op thread (all the work runs on it), so
other jobs on a shared machine do not inflate them; wall-clock time is recorded beside. On a GPU, wall
time with torch.cuda.synchronize() around each part. Results: benchmarks/results/profile_<preset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from fusionseg.encoders import EncoderSpec
from fusionseg.profiling import ProfileAccumulator

RESULTS = Path(__file__).parent / "results"
PRESETS = {
    # The paper's encoders with random weights at the configs' crop size. On the CPU one image per batch
    # (MetricProfiler's batches are the training batches; 16 images of ViT-B on one core take minutes).
    "cpu": dict(device="cpu", amp=False, threads=1, master="dinov3:size=base", aux="sam2:size=base_plus",
                size=512, batch=1, num_batches=8),
    "gpu": dict(device="cuda", amp=True, threads=None, master="dinov3:size=base", aux="sam2:size=base_plus",
                size=512, batch=16, num_batches=8),
    # For the test suite: tiny timm encoders and images; the same code path.
    "tiny": dict(device="cpu", amp=False, threads=1, master="regions:channels=32", aux="edges:channels=32",
                 size=128, batch=2, num_batches=2),
}
TARGET_METRICS_OVER_FORWARD = 0.25
TARGET_GPU_PASS_S = 60.0


def scene_images(n: int, size: int, seed: int) -> torch.Tensor:
    """`(n, 3, size, size)` images in [0, 1]: piecewise-constant colour regions with mild texture (edges for EF)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        segments = int(torch.randint(3, 12, (1,), generator=g))
        centers = torch.rand(segments, 2, generator=g)
        label = ((torch.stack([yy, xx], -1)[None] - centers[:, None, None]) ** 2).sum(-1).argmin(0)
        image = torch.rand(segments, 3, generator=g)[label].permute(2, 0, 1)
        texture = torch.nn.functional.interpolate(torch.randn(1, 3, size // 8, size // 8, generator=g),
                                                  size=(size, size), mode="bilinear")[0]
        out.append((image + 0.05 * texture).clamp(0, 1))
    return torch.stack(out)


class Clock:
    """Times a part: thread CPU time and wall time on the CPU, wall time between synchronizations on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {}
        self.wall: dict[str, list[float]] = {}

    def run(self, part: str, fn):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        c0, w0 = time.thread_time(), time.perf_counter()
        out = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - w0
        self.times.setdefault(part, []).append(wall if self.device.type == "cuda" else time.thread_time() - c0)
        self.wall.setdefault(part, []).append(wall)
        return out


def profile_pass(p: dict, device: torch.device, seed: int = 0) -> tuple[Clock, dict]:
    """One profiling pass of both encoders over `num_batches` batches, as MetricProfiler._measure runs it."""
    encoders = {role: EncoderSpec.parse(p[role]).build(pretrained=False).to(device).eval()
                for role in ("master", "aux")}
    accumulators = {role: ProfileAccumulator(list(enc.pyramid), seed=seed).to(device) for role, enc in encoders.items()}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if p["amp"] else nullcontext()
    clock = Clock(device)
    # One warm-up batch outside the timing (first calls pay for kernel selection, allocator growth, imports).
    warm = scene_images(p["batch"], p["size"], seed=seed + 99).to(device)
    with torch.no_grad():
        for role, enc in encoders.items():
            with autocast:
                feats = enc(enc.normalize(warm))
            ProfileAccumulator(list(enc.pyramid), seed=seed).to(device).update(feats, warm)
    with torch.no_grad():
        for index in range(p["num_batches"]):
            images = scene_images(p["batch"], p["size"], seed=seed + index).to(device)
            sizes = [tuple(images.shape[-2:])] * images.shape[0]
            order = range(index * p["batch"], (index + 1) * p["batch"])
            for role, enc in encoders.items():
                def forward(enc=enc):
                    with autocast:
                        return enc(enc.normalize(images))
                feats = clock.run(f"forward_{role}", forward)
                clock.run(f"metrics_{role}", lambda role=role, feats=feats: accumulators[role].update(
                    feats, images, sizes, order=order))
    values = {}
    for role, acc in accumulators.items():
        values[role] = clock.run(f"gather_{role}", lambda acc=acc: {
            s: {name: v.tolist() for name, v in per.items()} for s, per in acc.compute().items()})
    shapes = {role: {s: [enc.pyramid[s], p["size"] // s, p["size"] // s] for s in enc.pyramid}
              for role, enc in encoders.items()}
    return clock, {"feature_maps": shapes, "images": p["batch"] * p["num_batches"],
                   "sc_master": {s: statistics.mean(v["sc"]) for s, v in values["master"].items()}}


def summarize(clock: Clock) -> dict:
    parts = {}
    for part, times in clock.times.items():
        parts[part] = {"total_s": sum(times), "median_s": statistics.median(times), "calls": len(times),
                       "wall_total_s": sum(clock.wall[part])}
    total = {kind: sum(v["total_s"] for k, v in parts.items() if k.startswith(kind))
             for kind in ("forward", "metrics", "gather")}
    median = {kind: sum(v["median_s"] for k, v in parts.items() if k.startswith(kind) and kind != "gather")
              for kind in ("forward", "metrics")}
    wall = sum(v["wall_total_s"] for v in parts.values())
    return {"parts": parts, "total_s": total, "per_batch_median_s": median, "pass_s": sum(total.values()),
            "pass_wall_s": wall, "metrics_over_forward": total["metrics"] / total["forward"],
            "metrics_over_forward_medians": median["metrics"] / median["forward"]}


def machine(device: torch.device) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def markdown(r: dict) -> str:
    s, p = r["summary"], r["settings"]
    clock = ("CPU time of the main thread (one intra-op thread does all the work; other jobs on the machine do "
             "not inflate it)" if r["device"] == "cpu" else "wall time, torch.cuda.synchronize() around each part")
    rows = [f"| {part} | {v['total_s']:.2f} | {v['median_s'] * 1e3:.0f} | {v['calls']} | {v['wall_total_s']:.2f} |"
            for part, v in s["parts"].items()]
    verdicts = [f"- metrics / forward: **{s['metrics_over_forward']:.3f}** (per-batch medians: "
                f"{s['metrics_over_forward_medians']:.3f}); target <= {TARGET_METRICS_OVER_FORWARD}: "
                f"{'met' if r['verdicts']['metrics_within_target'] else 'NOT met'}"]
    if r["device"] == "cuda":
        verdicts.append(f"- whole pass: {s['pass_s']:.1f} s; target < {TARGET_GPU_PASS_S:.0f} s on one GPU: "
                        f"{'met' if r['verdicts']['pass_within_target'] else 'NOT met'}")
    else:
        verdicts.append(f"- whole pass: {s['pass_s']:.1f} s CPU time ({s['pass_wall_s']:.1f} s wall)")
    return "\n".join([
        f"# Profiling pass, timed in parts ({r['preset']})",
        "",
        f"Rerun: `{r['command']}`",
        "",
        "Machine: " + ", ".join(f"{k}={v}" for k, v in r["machine"].items()),
        "",
        f"What runs: MetricProfiler's pass — {p['master']} (master) and {p['aux']} (aux) with random weights, "
        f"{p['num_batches']} batches of {p['batch']} images of {p['size']}x{p['size']}"
        f"{', bf16 autocast' if p['amp'] else ', float32'}: each encoder's forward, then "
        "`ProfileAccumulator.update` (SC and EF of every stride, per image), then `ProfileAccumulator.compute` "
        "(the gather) and lists, as MetricProfiler does. One warm-up batch first, not timed.",
        "",
        f"Clock: {clock}.",
        "",
        "| part | total (s) | median per batch (ms) | calls | wall total (s) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *verdicts,
        "",
        "Feature maps per image (channels, h, w): " + json.dumps(r["details"]["feature_maps"]),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="the tiny preset (same code path, seconds on a CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for profile_<preset>.{json,md}")
    args = parser.parse_args(argv)
    preset = "tiny" if args.dry_run else args.preset
    p = PRESETS[preset]
    device = torch.device(p["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"preset {preset} needs a CUDA device; use --preset cpu or --dry-run")
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    clock, details = profile_pass(p, device)
    s = summarize(clock)
    verdicts = {"metrics_within_target": s["metrics_over_forward"] <= TARGET_METRICS_OVER_FORWARD}
    if device.type == "cuda":
        verdicts["pass_within_target"] = s["pass_s"] < TARGET_GPU_PASS_S
    result = {
        "preset": preset, "device": device.type,
        "command": shlex.join([".venv/bin/python", "benchmarks/bench_profile.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(device), "settings": p, "summary": s, "verdicts": verdicts, "details": details,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"profile_{preset}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
