"""`fusionseg encoders [--json] [NAME[:key=value,...] ...]`: the registered encoders and their pyramids.

Each encoder is built with its defaults (or the given arguments) on the meta device, so nothing is
allocated or loaded and listing is instant; `weights=` is not read. Encoders whose construction
needs real tensors (e.g. SAM2's Hiera computes its drop-path schedule with `.item()`) are built on
the CPU instead. An encoder that fails to import or build is listed with its error, the others
still print, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch

from fusionseg.encoders.registry import available, build, encoder_class, package_of, parse_spec


def _build_for_description(name: str, kwargs: dict[str, Any]) -> Any:
    """Build on the meta device (instant, no memory); encoders whose constructors read tensor values
    (SAM2's Hiera calls `.item()`) fail there with a meta-device error and are built on the CPU instead."""
    try:
        with torch.device("meta"):
            return build(name, **kwargs)
    except (RuntimeError, NotImplementedError) as err:
        if "meta" not in str(err).lower():
            raise
    return build(name, **kwargs)


def _arguments(factory: Any) -> str:
    """`key: type = default, ...` of a constructor, its annotations shown as written."""
    parts = []
    for p in inspect.signature(factory).parameters.values():
        hint = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
        text = p.name if p.annotation is p.empty else f"{p.name}: {hint}"
        parts.append(text if p.default is p.empty else f"{text} = {p.default!r}")
    return ", ".join(parts)


def describe(spec: str) -> dict[str, Any]:
    """What `fusionseg encoders` shows for one `NAME[:key=value,...]`; failures become an `error` entry."""
    info: dict[str, Any] = {"spec": spec}
    try:
        name, kwargs = parse_spec(spec)
        info.update(name=name, package=package_of(name))
        if kwargs.pop("weights", None) is not None:
            info["note"] = "weights are not read when describing an encoder"
        info["arguments"] = f"{name}({_arguments(encoder_class(name))})"
        info.update(_build_for_description(name, kwargs).describe())
    except Exception as err:  # every failure is shown next to its encoder, none stops the listing
        info["error"] = f"{type(err).__name__}: {err}"
    return info


def _format(info: dict[str, Any]) -> str:
    head = f"{info.get('name', info['spec'])}  ({info.get('package', '?')})"
    if "error" in info:
        return f"{head}\n  ERROR: {info['error']}"
    lines = [
        f"{head}  {info['class']}",
        f"  spec:         {info['spec']}",
        "  pyramid:      " + ", ".join(f"stride {s}: {c} ch" for s, c in info["pyramid"].items()),
        f"  mean / std:   {tuple(round(v, 4) for v in info['mean'])} / {tuple(round(v, 4) for v in info['std'])}",
        f"  size_divisor: {info['size_divisor']}",
        "  weights:      " + ("; ".join(info["weight_formats"]) or "(none)"),
        f"  arguments:    {info['arguments']}",
    ]
    lines += [f"  {k}: {v}" for k, v in info.items() if k not in _SHOWN]
    return "\n".join(lines)


_SHOWN = {"spec", "name", "package", "class", "pyramid", "mean", "std", "size_divisor", "weight_formats", "arguments"}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fusionseg encoders",
        description="List the registered encoders (entry-point group 'fusionseg.encoders') with their pyramids.",
    )
    parser.add_argument("specs", nargs="*", metavar="NAME[:key=value,...]",
                        help="describe these configurations (default: every registered encoder with its defaults)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    args = parser.parse_args(list(argv))
    specs = args.specs or available()
    infos = [describe(spec) for spec in specs]
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
    else:
        print("\n\n".join(_format(info) for info in infos))
    failed = [info["spec"] for info in infos if "error" in info]
    if failed:
        print(f"\n{len(failed)} of {len(infos)} encoders could not be built: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
