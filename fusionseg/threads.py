"""Thread settings for a machine that others may share: torch's intra-op threads and data-loader workers.

Called once by the `fusionseg` command before torch is imported. Without it torch starts one
OpenMP thread per core the machine has, not per core this process may use (a `taskset` mask, a
SLURM allocation, a container's CPU quota), and idle OpenMP threads spin for a while before they
sleep. Both multiply the run time once the cores are shared: spinning threads take the cycles the
working ones need. So:

* intra-op threads = half the cores this process may use (`available_cores`), at least 1: the other
  half is for the data-loader workers (one process each) and the rest of the machine. Unless
  `FUSIONSEG_NUM_THREADS` says otherwise, or `OMP_NUM_THREADS` / `MKL_NUM_THREADS` are set (then
  torch's own reading of them stands). On 2 cores the demo's 100 steps took 46 s with 2 threads and
  37 s with 1 (its steps are small: a second thread adds more synchronization than it saves);
* `OMP_WAIT_POLICY=PASSIVE` unless set: idle threads sleep at once instead of spinning (it only
  takes effect when set before torch starts OpenMP, which is why the command calls this first);
* `dataloader_workers(requested)` caps data-loader workers to leave the main process a core.

Set `FUSIONSEG_NUM_THREADS=0` to leave every setting as torch makes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

ENV = "FUSIONSEG_NUM_THREADS"
STANDARD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def _cgroup_quota(v2: Path | None = None, v1: tuple[Path, Path] | None = None) -> float | None:
    """CPUs' worth of time the container may use (`docker --cpus`), or None when unlimited or unknown."""
    v2, v1 = v2 or CGROUP_V2, v1 or CGROUP_V1
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if v1[0].is_file() and v1[1].is_file():
            quota_us, period_us = int(v1[0].read_text()), int(v1[1].read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (taskset, SLURM), capped by a cgroup CPU quota; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def default_threads(cores: int) -> int:
    """Intra-op threads for a process that may use `cores` cores: half of them, at least 1."""
    return max(1, cores // 2)


def requested_threads(environ: MutableMapping[str, str] = os.environ) -> int | None:
    """`FUSIONSEG_NUM_THREADS` as a count (0 = leave torch alone), or None when unset."""
    value = environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"{ENV}={value!r}: expected a thread count >= 1, or 0 to leave torch's settings alone")
    return count


def configure_threads(environ: MutableMapping[str, str] = os.environ) -> int | None:
    """Apply the settings of the module docstring; return the intra-op thread count set (None: left alone).

    Call it before torch is imported for the wait policy to take effect; the thread count is set
    either way.
    """
    wanted = requested_threads(environ)
    if wanted == 0:
        return None
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if wanted is None and any(environ.get(name) for name in STANDARD_ENVS):
        return None  # the user's OMP_NUM_THREADS / MKL_NUM_THREADS stand; torch reads them itself
    import torch

    count = wanted or default_threads(available_cores())
    torch.set_num_threads(count)
    return count


def dataloader_workers(requested: int, cores: int | None = None) -> int:
    """Data-loader workers for `requested`: at most one per core beyond the main process's first (0 on 1 core).

    Each worker is a process with one torch thread (torch sets that); with more workers than
    spare cores they take turns with the training step instead of running beside it.
    """
    if requested < 0:
        raise ValueError(f"num_workers must be >= 0, got {requested}")
    cores = available_cores() if cores is None else cores
    return min(requested, max(0, cores - 1))
