"""Training-step time and peak memory: our master-only and fused models vs transformers' Mask2Former.

Configurations, measured in the same run on the same inputs:

* `transformers`: `Mask2FormerForUniversalSegmentation` with our master encoder as its backbone
  (the same architecture, built from the same spec) and the very same Mask2Former config;
* `ours_master`: `FusedSegModule` without an auxiliary (the single-encoder baseline);
* `ours_fused`: `FusedSegModule` with the frozen auxiliary injected at stride 16;
* `aux_forward`: the auxiliary's forward pass alone, as the fused model runs it (no_grad).

One training step = forward, the Mask2Former loss (float32, outside autocast, in both models:
the matcher hands its costs to scipy), backward, AdamW step. Times are medians over rounds in
which the configurations take turns (rotating order), after warm-up steps.

Peak memory, one subprocess per configuration, after warm-up (so parameters, gradients'
previous allocations and optimizer state are resident and not counted):
* CPU: the exact allocation timeline of torch's CPU allocator from the profiler's raw kineto
  memory events (every allocation and free, with its size), cumulated; the peak of live tensor
  bytes above the level at the start of the step. tracemalloc would not see torch's C++
  allocations, and RSS deltas are blurred by glibc's heap caching and by sampling.
* CUDA: `torch.cuda.max_memory_allocated()` above `memory_allocated()` at the start of the step.

Run from the repository root (cpu-tiny: about 1-2 minutes on 2 CPU cores):
    .venv/bin/python benchmarks/bench_train_step.py
    .venv/bin/python benchmarks/bench_train_step.py --preset gpu-base   # ViT-B DINOv3 + Hiera-B+ SAM2, 512x512
Results go to benchmarks/results/train_step_<preset>.{json,md}. On CPU, step times are the main thread's
CPU time (one intra-op thread does all the work), so other processes on a shared machine do not blur
them; wall-clock times are recorded beside them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
from torch import nn

from fusionseg.encoders import EncoderSpec
from fusionseg.module import FusedSegModule
from fusionseg.optim import param_groups
from fusionseg.plan import encoder_names
from fusionseg.structures import SegTarget

CONFIGS = ("transformers", "ours_master", "ours_fused", "aux_forward")
PRESETS = {
    "cpu-tiny": dict(
        device="cpu", amp=False, threads=1, master="timm:model_name=resnet18", aux="timm:model_name=convnext_atto",
        strides=[16], size=128, batch=2, num_classes=20, segments=6, warmup=2, rounds=30,
        head=dict(num_queries=20, dec_layers=3, hidden_dim=64, train_points=2048, enc_layers=2, num_heads=4,
                  dim_feedforward=256, enc_feedforward=256),
    ),
    # The same code path in seconds, for the test of benchmarks/gpu_check.sh's dry run.
    "dry": dict(
        device="cpu", amp=False, threads=1, master="timm:model_name=resnet18", aux="timm:model_name=convnext_atto",
        strides=[16], size=64, batch=1, num_classes=5, segments=3, warmup=1, rounds=2,
        head=dict(num_queries=8, dec_layers=1, hidden_dim=32, train_points=256, enc_layers=1, num_heads=2,
                  dim_feedforward=64, enc_feedforward=64),
    ),
    "gpu-base": dict(
        device="cuda", amp=True, threads=None, master="dinov3:size=base", aux="sam2:size=base_plus",
        strides=[16], size=512, batch=4, num_classes=150, segments=12, warmup=3, rounds=20,
        head=dict(num_queries=100, dec_layers=9, hidden_dim=256, train_points=12544, enc_layers=6, num_heads=8,
                  dim_feedforward=2048, enc_feedforward=1024),
    ),
}
HEAD_STRIDES = (4, 8, 16, 32)
FUSED_BUDGET_RATIO = 1.10


class EncoderAsBackbone(nn.Module):
    """Our encoder behind the interface transformers' Mask2Former expects of `load_backbone(config)`."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.channels = [encoder.pyramid[s] for s in HEAD_STRIDES]

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        feats = self.encoder(self.encoder.normalize(pixel_values))
        return SimpleNamespace(feature_maps=tuple(feats[s] for s in HEAD_STRIDES))


def build_ours(p: dict, fused: bool) -> FusedSegModule:
    master = EncoderSpec.parse(p["master"])
    aux = EncoderSpec.parse(p["aux"]) if fused else None
    # Plans name encoders by registry name, or by full spec where two share one (fusionseg.plan.encoder_names).
    names = encoder_names([master, aux]) if fused else None
    plan = {"master": names[0], "aux": names[1], "strides": p["strides"]} if fused else None
    return FusedSegModule(master=master, aux=aux, plan=plan, num_classes=p["num_classes"], pretrained=False,
                          head=p["head"])


def build_transformers(p: dict, ours: FusedSegModule) -> nn.Module:
    from transformers import Mask2FormerForUniversalSegmentation
    from transformers.models.mask2former import modeling_mask2former

    backbone = EncoderAsBackbone(EncoderSpec.parse(p["master"]).build(pretrained=False))
    with mock.patch.object(modeling_mask2former, "load_backbone", lambda config: backbone):
        model = Mask2FormerForUniversalSegmentation(copy.deepcopy(ours.head.config))
    model.config.output_auxiliary_logits = True
    return model


def make_batch(p: dict, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, list[SegTarget]]:
    gen = torch.Generator().manual_seed(seed)
    size, n = p["size"], p["segments"]
    images = torch.rand(p["batch"], 3, size, size, generator=gen)
    targets = []
    for _ in range(p["batch"]):
        masks = torch.zeros(n, size, size, dtype=torch.bool)
        for k in range(n):
            y, x = torch.randint(0, size // 2, (2,), generator=gen).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=gen).tolist()
            masks[k, y : y + h, x : x + w] = True
            images[len(targets), :, y : y + h, x : x + w] = torch.rand(3, 1, 1, generator=gen)
        labels = torch.randint(0, p["num_classes"], (n,), generator=gen)
        targets.append(SegTarget(masks=masks.to(device), labels=labels.to(device)))
    return images.to(device), targets


def autocast(p: dict):
    return torch.autocast("cuda", dtype=torch.bfloat16) if p["amp"] else nullcontext()


def step_functions(p: dict, device: torch.device, names: tuple[str, ...] = CONFIGS) -> dict:
    """`name -> step()` closures over freshly built models (only those `names` need) and one fixed batch."""
    images, targets = make_batch(p, device)
    wanted = {n for n in ("ours_master", "ours_fused") if n in names}
    if "aux_forward" in names:
        wanted.add("ours_fused")
    ours = {name: build_ours(p, fused=name == "ours_fused").to(device).train() for name in sorted(wanted)}
    steps = {}

    def ours_step(module: FusedSegModule, opt: torch.optim.Optimizer) -> None:
        with autocast(p):
            out = module(images)
        module.head.loss(out, targets)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for name, module in ours.items():
        backbone = None if module.master.frozen else module.master
        opt = torch.optim.AdamW(param_groups(backbone, [module.pyramid.align, module.head], 1e-4, 0.05, 0.1))
        steps[name] = (lambda m=module, o=opt: ours_step(m, o))

    if "aux_forward" in names:
        steps["aux_forward"] = lambda: ours["ours_fused"].pyramid.run_aux(images)
    if "transformers" not in names:
        return steps
    hf = build_transformers(p, ours.get("ours_master") or build_ours(p, fused=False)).to(device).train()
    # The same AdamW groups as ours (backbone at 0.1x, no decay on norms/biases/embeddings): the optimizer's
    # temporaries depend on the grouping, and only the models should differ.
    hf_backbone = hf.model.pixel_level_module.encoder
    hf_rest = [m for name, m in hf.named_children() if name != "model"] + [
        hf.model.pixel_level_module.decoder, hf.model.transformer_module]
    hf_opt = torch.optim.AdamW(param_groups(hf_backbone, hf_rest, 1e-4, 0.05, 0.1))
    mask_labels, class_labels = [t.masks.float() for t in targets], [t.labels for t in targets]

    def hf_step() -> None:
        with autocast(p):
            out = hf(pixel_values=images)
        with torch.autocast(device.type, enabled=False):  # transformers' matcher needs float32 costs too
            layers = [{k: v.float() for k, v in a.items()} for a in out.auxiliary_logits]
            losses = hf.get_loss_dict(out.masks_queries_logits.float(), out.class_queries_logits.float(),
                                      mask_labels, class_labels, layers)
            hf.get_loss(losses).backward()
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    steps["transformers"] = hf_step
    return steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def summary(ts: list[float]) -> dict:
    q1, _, q3 = statistics.quantiles(ts, n=4)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "q1_s": q1, "q3_s": q3, "samples": len(ts)}


def measure_time(p: dict, device: torch.device) -> dict:
    """Per configuration: wall-clock and (on CPU) main-thread CPU time of a training step.

    With one intra-op thread all of a CPU step's work runs on the calling thread (autograd included),
    so its thread CPU time is the work done, unaffected by other processes taking the cores.
    """
    steps = step_functions(p, device)
    for step in steps.values():
        for _ in range(p["warmup"]):
            step()
    wall: dict[str, list[float]] = {name: [] for name in CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for r in range(p["rounds"]):
        order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]
        for name in order:
            sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            steps[name]()
            sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
    return {name: {"wall": summary(wall[name]), "thread_cpu": summary(cpu[name])} for name in CONFIGS}


def cpu_peak_bytes(fn) -> int:
    """Peak of live CPU tensor bytes during `fn()`, above the level at its start (kineto allocation events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure_memory(p: dict, device: torch.device, name: str) -> dict:
    step = step_functions(p, device, (name,))[name]
    for _ in range(p["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start
    else:
        peak = cpu_peak_bytes(step)
    return {"peak_step_bytes": int(peak)}


def machine(device: torch.device) -> dict:
    import transformers

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": model,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "load_average_1m": round(os.getloadavg()[0], 2)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def verdicts(times: dict, memory: dict, clock: str) -> dict:
    t = {k: v[clock]["median_s"] for k, v in times.items()}
    fastest = {k: v[clock]["min_s"] for k, v in times.items()}
    m = {k: v["peak_step_bytes"] for k, v in memory.items()}
    ratio = t["ours_master"] / t["transformers"]
    extra_time = t["ours_fused"] - t["ours_master"]
    extra_mem = m["ours_fused"] - m["ours_master"]
    return {
        "clock": clock,
        "master_vs_transformers_time_ratio": ratio,
        "master_vs_transformers_min_time_ratio": fastest["ours_master"] / fastest["transformers"],
        "master_no_slower_than_transformers": ratio <= 1.05,
        "fused_extra_time_s": extra_time,
        "fused_extra_min_time_s": fastest["ours_fused"] - fastest["ours_master"],
        "aux_forward_time_s": t["aux_forward"],
        "fused_extra_time_within_aux_forward": extra_time <= t["aux_forward"],
        # the measurement's own spread: half the interquartile range of the fused step's times
        "fused_step_half_iqr_s": (times["ours_fused"][clock]["q3_s"] - times["ours_fused"][clock]["q1_s"]) / 2,
        "fused_extra_peak_bytes": extra_mem,
        "aux_forward_peak_bytes": m["aux_forward"],
        "fused_extra_memory_within_aux_forward": extra_mem <= m["aux_forward"],
        # The GPU target of issue 17: the fused step within 1.10x transformers' step with the master alone,
        # plus at most the aux's own forward pass.
        "fused_budget_s": FUSED_BUDGET_RATIO * t["transformers"] + t["aux_forward"],
        "fused_within_budget": t["ours_fused"] <= FUSED_BUDGET_RATIO * t["transformers"] + t["aux_forward"],
    }


def write_markdown(path: Path, result: dict) -> None:
    mb = 2**20
    v = result["verdicts"]
    t = {n: result["time"][n][v["clock"]] for n in CONFIGS}
    wall = {n: result["time"][n]["wall"]["median_s"] for n in CONFIGS}
    rows = [f"| {n} | {t[n]['median_s'] * 1e3:.1f} | {t[n]['q1_s'] * 1e3:.1f}-{t[n]['q3_s'] * 1e3:.1f} | "
            f"{t[n]['min_s'] * 1e3:.1f} | {wall[n] * 1e3:.1f} | {result['memory'][n]['peak_step_bytes'] / mb:.1f} |"
            for n in CONFIGS]
    text = "\n".join([
        f"# Training step: ours vs transformers' Mask2Former ({result['preset']})",
        "",
        f"Rerun: `{result['command']}`",
        "",
        "Machine: " + ", ".join(f"{k}={val}" for k, val in result["machine"].items()),
        "",
        "Settings: " + json.dumps(result["settings"]),
        "",
        f"Step time clock: **{v['clock']}** ({CLOCKS[v['clock']]}).",
        "",
        "| configuration | step median (ms) | IQR (ms) | fastest (ms) | wall-clock median (ms) "
        "| peak step memory (MiB) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"- master-only vs transformers time ratio: **{v['master_vs_transformers_time_ratio']:.3f}** "
        f"(target <= 1.05: {'met' if v['master_no_slower_than_transformers'] else 'NOT met'}); "
        f"fastest-step ratio {v['master_vs_transformers_min_time_ratio']:.3f}",
        f"- fused minus master-only: {v['fused_extra_time_s'] * 1e3:.1f} ms (medians; fastest steps: "
        f"{v['fused_extra_min_time_s'] * 1e3:.1f} ms) vs the aux forward alone {v['aux_forward_time_s'] * 1e3:.1f} ms "
        f"({'within' if v['fused_extra_time_within_aux_forward'] else 'ABOVE'}; the fused step's half IQR, the "
        f"spread of this measurement, is {v['fused_step_half_iqr_s'] * 1e3:.1f} ms)",
        f"- fused step {t['ours_fused']['median_s'] * 1e3:.1f} ms vs {FUSED_BUDGET_RATIO:.2f} x transformers' step + the aux "
        f"forward = {v['fused_budget_s'] * 1e3:.1f} ms ({'within' if v['fused_within_budget'] else 'ABOVE'})",
        f"- fused minus master-only peak memory: {v['fused_extra_peak_bytes'] / mb:.1f} MiB vs the aux forward's "
        f"own peak {v['aux_forward_peak_bytes'] / mb:.1f} MiB "
        f"({'within' if v['fused_extra_memory_within_aux_forward'] else 'ABOVE'})",
        "",
        "## What is compared",
        "",
        "transformers' `Mask2FormerForUniversalSegmentation` is built from the very Mask2Former config of our head, "
        "with the master encoder (same spec, built the same way) as its backbone, and trained with the same AdamW "
        "groups; its loss is its own `get_loss_dict` in float32. Other presets: "
        + ", ".join(f"`{name}` ({PRESETS[name]['master']} + {PRESETS[name]['aux']} at {PRESETS[name]['size']}px "
                     f"on {PRESETS[name]['device']})" for name in PRESETS if name != result["preset"])
        + "; each writes its own results file next to this one.",
        "",
        "## How memory is measured",
        "",
        result["memory_method"],
        "",
    ])
    path.write_text(text)


CLOCKS = {
    "thread_cpu": "CPU time of the main thread: with one intra-op thread it is the step's work, whatever else "
                  "runs on the machine; wall-clock medians are shown beside it",
    "wall": "wall-clock time with torch.cuda.synchronize() around each step",
}
MEMORY_METHOD = {
    "cpu": ("One subprocess per configuration; after the warm-up steps (parameters and AdamW state resident), one "
            "step runs under torch.profiler(profile_memory=True) and the raw kineto '[memory]' events (every "
            "allocation and free of torch's CPU allocator, with its size and time) are cumulated in time order; "
            "the peak of live tensor bytes above the level at the step's start is reported. tracemalloc does not "
            "see torch's C++ allocations; RSS deltas are blurred by glibc's heap caching and sampling. Memory that "
            "is not a torch tensor (Python objects, scipy's matcher) is not counted."),
    "cuda": ("One subprocess per configuration; after the warm-up steps, torch.cuda.max_memory_allocated() over "
             "one step minus memory_allocated() at its start."),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--memory", choices=CONFIGS, help=argparse.SUPPRESS)  # child process: one configuration
    parser.add_argument("--memory-in-process", action="store_true",
                        help="measure memory in this process, one configuration after another (quicker, less "
                             "exact: earlier configurations' allocations stay cached); for dry runs")
    args = parser.parse_args(argv)
    p = PRESETS[args.preset]
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    device = torch.device(p["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"preset {args.preset} needs a CUDA device")
    torch.manual_seed(0)
    if args.memory:
        print(json.dumps(measure_memory(p, device, args.memory)))
        return 0
    memory = {}
    for name in CONFIGS:
        if args.memory_in_process:
            memory[name] = measure_memory(p, device, name)
            continue
        child = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--memory", name],
                               capture_output=True, text=True, check=True)
        memory[name] = json.loads(child.stdout.strip().splitlines()[-1])
    times = measure_time(p, device)
    result = {
        "preset": args.preset, "command": f".venv/bin/python benchmarks/bench_train_step.py --preset {args.preset}",
        "machine": machine(device), "settings": p, "time": times, "memory": memory,
        "verdicts": verdicts(times, memory, "thread_cpu" if device.type == "cpu" else "wall"),
        "memory_method": MEMORY_METHOD[device.type],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"train_step_{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(stem.with_suffix(".md"), result)
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
