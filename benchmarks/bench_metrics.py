"""Speed of the label-free metrics, and agreement of SCS with a straightforward scikit-learn reference.

Milliseconds per feature map for SC and EF (fusionseg.metrics, batched) at the shapes of the
issue, beside the paper's settings done plainly: scikit-learn `KMeans(n_init=10)` and
`silhouette_score` on all rows, for the same standardized, subsampled, PCA-reduced rows. Then
the Spearman rank agreement of SCS (and SC) between the two over a broad set of feature maps:
piecewise-constant regions plus noise at several levels (32-128 px, 64-1024 channels), maps of
encoders with random weights (timm resnet18 and convnext_atto, the reference encoders `edges` and
`regions`) on images of coloured regions, and the varied synthetic maps of the speed rows. SCS
draws random numbers (subsets, k-means starts), and so does the reference (its k-means starts):
the agreement is given for several of our seeds, and the reference's agreement with itself under
another seed says how much of the disagreement is the reference's own noise.

    python benchmarks/bench_metrics.py                      # CPU, writes benchmarks/results/metrics_cpu.{json,md}
    python benchmarks/bench_metrics.py --device cuda        # adds GPU rows
    python benchmarks/bench_metrics.py --device cuda --gpu-only   # GPU rows only (no CPU reference, no agreement)
    python benchmarks/bench_metrics.py --dry-run            # tiny shapes and few maps: the code path in seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import sklearn
import torch
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from fusionseg.metrics import edge_fidelity, faiss_has_gpu, structural_coherence

SHAPES = ((256, 32, 32), (256, 64, 64), (768, 64, 64), (256, 128, 128))
RESULTS = Path(__file__).parent / "results"


# -- feature maps ----------------------------------------------------------------------------------
def synthetic_features(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """`(C, h, w)` features with varied structure: Voronoi segments, a smooth field and noise in varied mixes."""
    g = torch.Generator().manual_seed(seed)
    segments = 2 + seed % 11
    centers = torch.rand(segments, 2, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    label = ((torch.stack([yy, xx], -1)[None] - centers[:, None, None]) ** 2).sum(-1).argmin(0)
    latent = 16
    protos = torch.randn(segments, latent, generator=g)
    smooth = torch.nn.functional.interpolate(torch.randn(1, latent, 4, 4, generator=g), size=(h, w), mode="bicubic",
                                             align_corners=False)[0]
    noise_level = [0.05, 0.2, 0.5, 1.0, 2.0][seed % 5]
    smooth_level = [0.0, 0.5, 1.0][seed % 3]
    z = protos[label].permute(2, 0, 1) + smooth_level * smooth + noise_level * torch.randn(latent, h, w, generator=g)
    mix = torch.randn(c, latent, generator=g) / math.sqrt(latent)
    return torch.einsum("cl,lhw->chw", mix, z) + 0.05 * torch.randn(c, h, w, generator=g)


def synthetic_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Piecewise-constant colour images with edges (EF needs an image)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")


# -- the straightforward reference ---------------------------------------------------------------------
def reference_sfc(feat: np.ndarray, K: int = 16) -> float:
    norm = np.linalg.norm(feat, axis=0)
    z = (norm - norm.mean()) / max(norm.std(), 1e-8)
    h, w = z.shape
    ky, kx = max(1, min(K, h // 2)), max(1, min(K, w // 2))
    bh, bw = h // ky, w // kx
    blocks = z[: bh * ky, : bw * kx].reshape(ky, bh, kx, bw).transpose(0, 2, 1, 3).reshape(ky * kx, -1)
    between = blocks.mean(1).var()
    return float(between / (between + max(blocks.var(1).mean(), 1e-6)))


def reference_rows(feat: np.ndarray, max_samples: int = 4096, pca_dim: int = 32, seed: int = 0) -> np.ndarray:
    """The rows SCS clusters: standardized channels, the same seeded subset, scikit-learn PCA."""
    c = feat.shape[0]
    x = feat.reshape(c, -1).T
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    if x.shape[0] > max_samples:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(x.shape[0], generator=gen)[:max_samples].sort().values.numpy()  # as SCS draws them
        x = x[idx]
    d = min(pca_dim, c, x.shape[0] - 1)
    return PCA(d, random_state=seed).fit_transform(x) if c > d else x


def reference_scs(rows: np.ndarray, ks: tuple[int, ...] = (6, 8, 10), seed: int = 0) -> float:
    sils = []
    for k in ks:
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(rows)
        if np.bincount(labels, minlength=k).min() >= 2:
            sils.append(silhouette_score(rows, labels))
    return float((np.median(sils) + 1) / 2) if sils else 0.0


def reference_sc(feat: np.ndarray) -> tuple[float, float]:
    scs = reference_scs(reference_rows(feat))
    return math.sqrt(reference_sfc(feat) * scs), scs


# -- timing ------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """CPU time of this process on the CPU (steady while other jobs share the cores), wall time on a GPU."""
    return time.process_time() if device.type == "cpu" else time.perf_counter()


def time_ms(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median and minimum time of `fn()` in ms over `repeats` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = clock(device)
        fn()
        _sync(device)
        times.append((clock(device) - start) * 1000)
    return statistics.median(times), min(times)


def reference_ms(maps: list[np.ndarray], repeats: int) -> tuple[float, float]:
    """The reference's CPU time per map in ms: the mean over the maps of each map's median and minimum over
    `repeats` calls, after one warm-up call as ours gets (scikit-learn's first calls pay one-off costs)."""
    reference_sc(maps[0])
    medians, minima = [], []
    for f in maps:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            reference_sc(f)
            times.append((time.process_time() - start) * 1000)
        medians.append(statistics.median(times))
        minima.append(min(times))
    return statistics.mean(medians), statistics.mean(minima)


def bench_speed(device: torch.device, batch: int, repeats: int, ref_maps: int) -> list[dict]:
    rows = []
    for c, h, w in SHAPES:
        feats = torch.stack([synthetic_features(c, h, w, seed) for seed in range(batch)]).to(device)
        images = synthetic_images(batch, 4 * h, seed=0).to(device)
        sc_ms, sc_min_ms = (t / batch for t in time_ms(lambda: structural_coherence(feats), repeats, device))
        ef_ms, ef_min_ms = (t / batch for t in time_ms(lambda: edge_fidelity(feats, images), repeats, device))
        row = {"device": device.type, "channels": c, "h": h, "w": w, "batch": batch, "repeats": repeats,
               "sc_ms": sc_ms, "sc_min_ms": sc_min_ms, "ef_ms": ef_ms, "ef_min_ms": ef_min_ms}
        if device.type == "cpu":
            # The reference runs on the first maps of the same batch, timed as often as ours.
            row["reference_maps"] = min(ref_maps, batch)
            ref_ms, ref_min_ms = reference_ms([f.numpy() for f in feats[:ref_maps].cpu()], repeats)
            row.update(reference_sc_ms=ref_ms, reference_sc_min_ms=ref_min_ms,
                       speedup_sc=ref_ms / sc_ms, speedup_sc_min=ref_min_ms / sc_min_ms)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def voronoi_regions(c: int, h: int, w: int, segments: int, noise: float, seed: int) -> torch.Tensor:
    """`(C, h, w)` features constant on `segments` Voronoi regions (16 latent dimensions mixed to C), plus noise."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(segments, 2, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    label = ((torch.stack([yy, xx], -1)[None] - centers[:, None, None]) ** 2).sum(-1).argmin(0)
    latent = 16
    z = torch.randn(segments, latent, generator=g)[label].permute(2, 0, 1)
    z = z + noise * torch.randn(latent, h, w, generator=g)
    mix = torch.randn(c, latent, generator=g) / math.sqrt(latent)
    return torch.einsum("cl,lhw->chw", mix, z) + 0.05 * torch.randn(c, h, w, generator=g)


def region_images(n: int, size: int, seed: int) -> torch.Tensor:
    """`(n, 3, size, size)` images in [0, 1]: Voronoi regions of random colours with mild texture and noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for i in range(n):
        segments = 3 + (seed + i) % 9
        centers = torch.rand(segments, 2, generator=g)
        label = ((torch.stack([yy, xx], -1)[None] - centers[:, None, None]) ** 2).sum(-1).argmin(0)
        image = torch.rand(segments, 3, generator=g)[label].permute(2, 0, 1)
        texture = torch.nn.functional.interpolate(torch.randn(1, 3, size // 8, size // 8, generator=g),
                                                  size=(size, size), mode="bilinear")[0]
        out.append((image + 0.08 * texture + 0.03 * torch.randn(3, size, size, generator=g)).clamp(0, 1))
    return torch.stack(out)


ENCODERS = ("timm:model_name=resnet18", "timm:model_name=convnext_atto", "edges:channels=64", "regions:channels=64",
            "edges:channels=256", "regions:channels=256")


def agreement_maps(dry_run: bool = False) -> list[tuple[str, str, torch.Tensor]]:
    """`(family, name, (C, h, w) features)` of the broad agreement set (a handful of small maps for a dry run)."""
    from fusionseg.encoders import EncoderSpec

    maps = []
    grid = ((64,), (32,), (0.3,), (3,)) if dry_run else ((64, 256, 1024), (32, 64, 128), (0.0, 0.3, 1.0, 3.0), (3, 8))
    seed = 0
    for c in grid[0]:
        for side in grid[1]:
            for noise in grid[2]:
                for segments in grid[3]:
                    seed += 1
                    maps.append(("regions+noise", f"C={c} {side}px noise {noise} {segments} regions",
                                 voronoi_regions(c, side, side, segments, noise, seed)))
    for spec in ENCODERS[:1] if dry_run else ENCODERS:
        encoder = EncoderSpec.parse(spec).build(pretrained=False).eval()
        for size in (128,) if dry_run else (256, 512):
            images = region_images(1 if dry_run else 2, size, seed=size + len(spec))
            with torch.no_grad():
                feats = encoder(encoder.normalize(images))
            for stride, f in sorted(feats.items()):
                if 32 <= min(f.shape[-2:]) <= 128 or (dry_run and min(f.shape[-2:]) >= 8):
                    for i in range(f.shape[0]):
                        maps.append(("encoders", f"{spec} {size}px image OS {stride} #{i} (C={f.shape[1]})",
                                     f[i].clone()))
    shapes = [(64, 32, 32), (256, 32, 32), (128, 48, 48), (256, 64, 64)]
    for i in range(2 if dry_run else 24):
        c, h, w = shapes[i % len(shapes)]
        maps.append(("varied", f"synthetic_features({c}, {h}, {w}, seed={100 + i})",
                     synthetic_features(c, h, w, seed=100 + i)))
    return maps


def _spearman(a: list[float], b: list[float]) -> float:
    return float(spearmanr(a, b).statistic)


def bench_agreement(seeds: tuple[int, ...], reference_floor: bool, dry_run: bool = False) -> dict:
    """Spearman rank agreement of SCS (and SC) with the reference over the broad set (CPU), for each of our seeds."""
    maps = agreement_maps(dry_run)
    families = [family for family, _, _ in maps]
    ref_scs, ref_sc = [], []
    for _, _, feat in maps:
        sc, scs_value = reference_sc(feat.numpy())
        ref_scs.append(scs_value)
        ref_sc.append(sc)
    ours = {}
    for seed in seeds:
        out = [structural_coherence(feat[None], seed=seed) for _, _, feat in maps]
        ours[seed] = ([float(o["scs"][0]) for o in out], [float(o["sc"][0]) for o in out])
    first = ours[seeds[0]][0]
    per_seed = {str(seed): _spearman(scs_values, ref_scs) for seed, (scs_values, _) in ours.items()}
    result = {
        "num_maps": len(maps),
        "families": {f: families.count(f) for f in dict.fromkeys(families)},
        "seeds": list(seeds),
        "spearman_scs": per_seed[str(seeds[0])],
        "spearman_scs_per_seed": per_seed,
        "spearman_scs_mean_over_seeds": statistics.mean(per_seed.values()),
        "spearman_scs_min_over_seeds": min(per_seed.values()),
        "spearman_sc": _spearman(ours[seeds[0]][1], ref_sc),
        "spearman_scs_per_family": {f: _spearman([v for v, g in zip(first, families) if g == f],
                                                 [v for v, g in zip(ref_scs, families) if g == f])
                                    for f in dict.fromkeys(families)},
        "max_abs_diff_scs": float(np.max(np.abs(np.array(first) - np.array(ref_scs)))),
        "mean_abs_diff_scs": float(np.mean(np.abs(np.array(first) - np.array(ref_scs)))),
        "maps": [name for _, name, _ in maps],
        "ours_scs": first,
        "reference_scs": ref_scs,
    }
    if reference_floor:  # the reference against itself: scikit-learn's k-means starts from another seed
        again = [reference_scs(reference_rows(feat.numpy()), seed=1) for _, _, feat in maps]
        result["reference_seed1_vs_seed0_spearman_scs"] = _spearman(again, ref_scs)
    return result


def _python() -> str:
    """The interpreter as it is called from the repository root (the project's virtual environment, usually)."""
    root = Path(__file__).resolve().parents[1]
    exe = Path(sys.executable)
    return os.path.relpath(exe, root) if exe.is_relative_to(root) else "python"


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["faiss_gpu"] = faiss_has_gpu()
    return info


def markdown(result: dict) -> str:
    speed = result["speed"]
    lines = [
        "# Metric speed (`benchmarks/bench_metrics.py`)",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['logical_cores']} logical cores; "
        f"threads used: {result['threads']}; torch {result['machine']['torch']}, faiss {result['machine']['faiss']}, "
        f"scikit-learn {result['machine']['scikit-learn']}; 1-minute load average at the end "
        f"{result['machine']['load_average_1min_at_end']}.",
        "",
        "Milliseconds per feature map: CPU time of the process on the CPU (steady while other jobs share "
        "the machine; equal to wall time with one thread and an idle machine), wall time on a GPU; median "
        f"(and minimum) of {speed[0]['repeats']} calls after a warm-up call, batches of {speed[0]['batch']} maps. "
        f"Reference, on the first {speed[0].get('reference_maps', '-')} maps of the same batches, each map timed "
        "as often after one warm-up call: the same standardized, subsampled rows reduced with scikit-learn "
        "`PCA(32)`, clustered with `KMeans(n_init=10)` and scored with `silhouette_score` on all rows, for k in "
        "(6, 8, 10); SFC in numpy.",
        "",
        "| device | C | h x w | SC ms (min) | EF ms (min) | reference SC ms (min) | SC speed-up (of minima) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in speed:
        ref = f"{r['reference_sc_ms']:.1f} ({r['reference_sc_min_ms']:.1f})" if "reference_sc_ms" in r else "-"
        gain = f"{r['speedup_sc']:.1f}x ({r['speedup_sc_min']:.1f}x)" if "speedup_sc" in r else "-"
        shape = f"{r['channels']} | {r['h']}x{r['w']}"
        sc, ef = f"{r['sc_ms']:.2f} ({r['sc_min_ms']:.2f})", f"{r['ef_ms']:.1f} ({r['ef_min_ms']:.1f})"
        lines.append(f"| {r['device']} | {shape} | {sc} | {ef} | {ref} | {gain} |")
    a = result.get("agreement")
    cpu = [r for r in speed if "speedup_sc" in r]
    short = [f"{r['channels']}, {r['h']}x{r['w']}" for r in cpu if r["speedup_sc"] < 20]
    if cpu:
        lines += [
            "",
            f"Target: SC at least 20x faster than the reference on CPU (medians); met at {len(cpu) - len(short)} of "
            f"{len(cpu)} shapes" + (f" (not at {'; '.join(short)})." if short else "."),
        ]
    if a:
        lines += [
            "",
            f"Rank agreement of SCS with the reference over {a['num_maps']} feature maps "
            f"({', '.join(f'{n} {f}' for f, n in a['families'].items())}): Spearman SCS = "
            f"**{a['spearman_scs']:.3f}** (seed {a['seeds'][0]}; over seeds {a['seeds']}: mean "
            f"{a['spearman_scs_mean_over_seeds']:.3f}, min {a['spearman_scs_min_over_seeds']:.3f}), "
            f"SC = {a['spearman_sc']:.3f}; per family: "
            + ", ".join(f"{f} {v:.3f}" for f, v in a["spearman_scs_per_family"].items())
            + f". Largest SCS difference {a['max_abs_diff_scs']:.3f}, mean {a['mean_abs_diff_scs']:.3f}."
            + (f" The reference against itself (scikit-learn's k-means started from seed 1 instead of 0): "
               f"Spearman {a['reference_seed1_vs_seed0_spearman_scs']:.3f}, the noise floor of this comparison."
               if "reference_seed1_vs_seed0_spearman_scs" in a else ""),
        ]
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, faiss and scikit-learn alike")
    parser.add_argument("--batch", type=int, default=4, help="feature maps per metric call")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--reference-maps", type=int, default=4, help="maps timed with the reference per shape")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="SCS seeds for the agreement (the first is the headline number)")
    parser.add_argument("--no-reference-floor", action="store_true",
                        help="skip the reference's agreement with itself under another seed (one more reference pass)")
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the GPU speed rows: no CPU reference, no agreement")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes, few maps: the code path in seconds")
    parser.add_argument("--out", type=Path, default=None,
                        help="output stem (default benchmarks/results/metrics_<device>)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.gpu_only and device.type != "cuda":
        raise SystemExit("--gpu-only needs --device cuda")
    global SHAPES
    if args.dry_run:
        SHAPES = ((32, 16, 16), (64, 32, 32))
        args.repeats, args.reference_maps, args.seeds = 1, 1, args.seeds[:1]
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    agreement = None
    with threadpool_limits(args.threads):
        speed = [] if args.gpu_only else bench_speed(torch.device("cpu"), args.batch, args.repeats, args.reference_maps)
        if device.type == "cuda":
            speed += bench_speed(device, args.batch, args.repeats, 0)
        if not args.gpu_only:
            agreement = bench_agreement(tuple(args.seeds), not args.no_reference_floor, args.dry_run)
    result = {
        "command": shlex.join([_python(), "benchmarks/bench_metrics.py", *(sys.argv[1:] if argv is None else argv)]),
        "threads": args.threads,
        "machine": machine(),
        "speed": speed,
        "agreement": agreement,
    }
    stem = args.out or RESULTS / f"metrics_{device.type}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
