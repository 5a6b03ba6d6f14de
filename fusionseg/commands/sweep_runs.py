"""One run of `fusionseg sweep`: its folder, the `fit`/`validate` command it needs next, running it, and
whether it finished (its final validation metrics, read from its TensorBoard events).

A run is `<out>/<plan>/seed<k>`, an ordinary `fusionseg fit` folder: checkpoints in `checkpoints/`,
TensorBoard events in `lightning_logs/`, the sweep's log of its commands in `fit.log`, and the final
metrics cached in `result.json` once it finished.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RESULT_FILE = "result.json"
STOPPED = (130, 143)  # fit's exit codes after Ctrl-C / SIGTERM (last.ckpt saved): the sweep stops too


def run_dir(out: Path, plan: str, seed: int) -> Path:
    return out / plan / f"seed{seed}"


def last_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


def fit_command(config: Path, run: Path, plan_path: Path | None, seed: int, steps: int,
                overrides: Sequence[str], resume: bool) -> list[str]:
    """The `fit` arguments of one run: the user's overrides first, the sweep's settings after them (they win)."""
    args = ["fit", "--config", str(config), *overrides,
            "--trainer.default_root_dir", str(run), "--seed_everything", str(seed),
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--trainer.check_val_every_n_epoch", "null"]
    args += ["--model.aux", "null", "--model.plan", "null"] if plan_path is None else ["--model.plan", str(plan_path)]
    if resume:
        args += ["--ckpt_path", "last"]
    return args


def validate_command(config: Path, run: Path, plan_path: Path | None, overrides: Sequence[str]) -> list[str]:
    """The `validate` arguments that score a run's `last.ckpt` (see `validated_last_checkpoint`)."""
    args = ["validate", "--config", str(config), *overrides, "--trainer.default_root_dir", str(run)]
    args += ["--model.aux", "null", "--model.plan", "null"] if plan_path is None else ["--model.plan", str(plan_path)]
    return [*args, "--ckpt_path", str(last_checkpoint(run))]


def read_val_metrics(run: Path, since: float = 0.0) -> tuple[int, dict[str, float]] | None:
    """`(step, {"mIoU": ..., ...})`: the run's scalar `val/*` metrics (not the per-class ones) at the last
    step they were logged, over every TensorBoard event file of the run (resumed runs write several),
    counting only events written at or after the time `since`."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    latest: dict[str, tuple[int, float, float]] = {}  # tag -> (step, wall time, value)
    for path in sorted(run.glob("lightning_logs/*/events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():  # scalars come as 0-d tensors (TensorBoard's data-compat form)
            for value in event.summary.value:
                tag = value.tag
                if not tag.startswith("val/") or tag.count("/") != 1 or event.wall_time < since:
                    continue
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    number = float(value.simple_value)
                elif kind == "tensor" and value.tensor.tensor_shape.dim == []:
                    number = float(make_ndarray(value.tensor))
                else:
                    continue
                key = (event.step, event.wall_time)
                if tag not in latest or key >= latest[tag][:2]:
                    latest[tag] = (event.step, event.wall_time, number)
    if not latest:
        return None
    step = max(s for s, _, _ in latest.values())
    return step, {tag[len("val/"):]: v for tag, (s, _, v) in sorted(latest.items()) if s == step}


def checkpoint_step(path: Path) -> int:
    """The optimizer step a Lightning checkpoint was saved at (-1 when it cannot be read)."""
    import torch

    try:  # memory-mapped: only the few bytes of `global_step` are read, whatever the model's size
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True).get("global_step", -1))
    except Exception:  # a truncated or foreign file: not a finished run
        return -1


def validated_last_checkpoint(run: Path, steps: int) -> tuple[int, dict[str, float]] | None:
    """The metrics of a `fusionseg validate` of `last.ckpt`, when that checkpoint holds all `steps` steps.

    A fit stopped during its final validation leaves `last.ckpt` at the last step: resuming it trains
    nothing and validates nothing, so the sweep validates the checkpoint instead (`validate_command`);
    Lightning logs that at step 0, after the checkpoint was written.
    """
    last = last_checkpoint(run)
    if not last.is_file() or checkpoint_step(last) < steps:
        return None
    return read_val_metrics(run, since=last.stat().st_mtime)


def run_result(run: Path, steps: int, headline: str) -> dict[str, float] | None:
    """The final validation metrics of a finished run, else None.

    A run is finished when its headline metric was logged at the last step (Lightning logs the end-of-run
    validation at step `steps - 1`), or by a validation of a `last.ckpt` of all `steps` steps; the metrics
    are then cached in `<run>/result.json`.
    """
    cache = run / RESULT_FILE
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("steps") == steps:
            return stored["metrics"]
    found = read_val_metrics(run)
    if found is None or found[0] < steps - 1 or headline not in found[1]:
        found = validated_last_checkpoint(run, steps)
    if found is None or headline not in found[1]:
        return None
    cache.write_text(json.dumps({"steps": steps, "step": found[0], "metrics": found[1]}, indent=2) + "\n")
    return found[1]


def fusionseg_command() -> list[str]:
    """How this Python runs `fusionseg` (the console script may not be on PATH)."""
    return [sys.executable, "-m", "fusionseg.cli"]


def next_command(config: Path, run: Path, plan_path: Path | None, seed: int, steps: int,
                 overrides: Sequence[str]) -> tuple[str, list[str]]:
    """What an unfinished run needs next, `(action, fusionseg arguments)`: a fit (`running`), a fit from its
    `last.ckpt` (`resuming`), or a validation of a `last.ckpt` that holds every step (`validating`)."""
    last = last_checkpoint(run)
    if not last.is_file():
        return "running", fit_command(config, run, plan_path, seed, steps, overrides, resume=False)
    if checkpoint_step(last) >= steps:
        return "validating last.ckpt", validate_command(config, run, plan_path, overrides)
    return "resuming", fit_command(config, run, plan_path, seed, steps, overrides, resume=True)


def run_logged(folder: Path, argv: Sequence[str], log_name: str) -> int:
    """`fusionseg ARGV` in a process of its own, its output appended to `<folder>/<log_name>`; the exit code."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / log_name, "a") as log:
        log.write(f"$ {shlex.join(['fusionseg', *argv])}\n")
        log.flush()
        return subprocess.call([*fusionseg_command(), *argv], stdout=log, stderr=subprocess.STDOUT)


def run_fit(run: Path, argv: Sequence[str], steps: int, headline: str) -> tuple[int, str]:
    """One run's `fusionseg fit` (or `validate`), logged to `<run>/fit.log`: (exit code, one line on how it went)."""
    start = time.monotonic()
    code = run_logged(run, argv, "fit.log")
    if code in STOPPED:
        return code, f"stopped by a signal (exit code {code}) with last.ckpt saved; see {run / 'fit.log'}"
    result = run_result(run, steps, headline) if code == 0 else None
    if result is None:
        why = f"exit code {code}" if code else f"no final validation of {headline} was logged"
        return code or 1, f"failed ({why}); see {run / 'fit.log'}"
    return 0, f"{headline} {result[headline]:.2f} in {time.monotonic() - start:.0f} s"
