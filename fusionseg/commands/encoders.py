"""`fusionseg encoders [--json] [NAME[:key=value,...] ...]`: the installed encoders with their pyramids, and how to install the rest.

Each encoder is built with its defaults (or the given arguments) on the meta device, so nothing is
allocated or loaded and listing is instant; `weights=` is not read. Encoders whose construction
needs real tensors (e.g. SAM2's Hiera computes its drop-path schedule with `.item()`) are built on
the CPU instead. An encoder whose optional package is missing (SAM2 without `sam2`) is listed as not
installed with the pip command that installs it; that is a normal state, exit 0. An encoder that
fails for another reason (a broken plugin) is listed with its error, the others still print, and
the exit code is 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections.abc import Sequence
from importlib import metadata
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


def missing_module(err: BaseException) -> str | None:
    """The top-level module whose absence caused `err` (searched along its causes), else None."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            return seen.name.split(".")[0]
        seen = seen.__cause__ or seen.__context__
    return None


def fusionseg_extras() -> dict[str, str]:
    """`{distribution: extra}` of fusionseg's optional dependencies (`sam2>=1.1; extra == "sam2"` -> sam2: sam2)."""
    try:
        requires = metadata.requires("fusionseg") or []
    except metadata.PackageNotFoundError:
        return {}
    extras = {}
    for requirement in requires:
        match = re.match(r"\s*([A-Za-z0-9_.-]+).*;\s*extra\s*==\s*[\"']([^\"']+)[\"']", requirement)
        if match:
            extras.setdefault(match.group(1).lower().replace("_", "-"), match.group(2))
    return extras


# What else a user needs to know to install a package (sam2 builds a CUDA extension unless told not to).
INSTALL_NOTES = {"sam2": "SAM2_BUILD_CUDA=0 before it skips the CUDA extension on machines without nvcc"}


def install_command(module: str, package: str) -> str:
    """How to get `module`: fusionseg's extra when one provides it, else the module's own package."""
    extra = fusionseg_extras().get(module.lower().replace("_", "-"))
    command = f'pip install "fusionseg[{extra}]"' if extra is not None and package.startswith("fusionseg ") \
        else f"pip install {module}"
    note = INSTALL_NOTES.get(module)
    return f"{command}  ({note})" if note else command


def _own_module(name: str | None) -> str | None:
    """The top-level module an encoder's entry point names: if that one is missing, the plugin is broken."""
    for ep in metadata.entry_points(group="fusionseg.encoders"):
        if ep.name == name:
            return ep.value.split(":")[0].split(".")[0]
    return None


def describe(spec: str) -> dict[str, Any]:
    """What `fusionseg encoders` shows for one `NAME[:key=value,...]`: a missing optional package becomes
    `missing` + `install`; other failures an `error` entry."""
    info: dict[str, Any] = {"spec": spec}
    try:
        name, kwargs = parse_spec(spec)
        info.update(name=name, package=package_of(name))
        if kwargs.pop("weights", None) is not None:
            info["note"] = "weights are not read when describing an encoder"
        info["arguments"] = f"{name}({_arguments(encoder_class(name))})"
        info.update(_build_for_description(name, kwargs).describe())
    except Exception as err:  # every failure is shown next to its encoder, none stops the listing
        module = missing_module(err)
        if module is not None and module not in ("fusionseg", _own_module(info.get("name"))):
            info.update(missing=module, install=install_command(module, info.get("package", "")))
        else:
            info["error"] = f"{type(err).__name__}: {err}"
    return info


def _format(info: dict[str, Any]) -> str:
    head = f"{info.get('name', info['spec'])}  ({info.get('package', '?')})"
    if "missing" in info:
        return f"{head}  not installed\n  needs:        the {info['missing']!r} package\n  install:      {info['install']}"
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
    missing = [info for info in infos if "missing" in info]
    if missing and not args.json:
        ready = len(infos) - len(missing) - sum("error" in info for info in infos)
        hints = "; ".join(f"{info['spec']}: {info['install']}" for info in missing)
        print(f"\n{ready} of {len(infos)} encoders ready; to install the rest: {hints}")
    failed = [info["spec"] for info in infos if "error" in info]
    if failed:
        print(f"\n{len(failed)} of {len(infos)} encoders could not be built: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
