"""Encoders are found through the `fusionseg.encoders` entry-point group, built-ins included."""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import yaml

from fusionseg.encoders.base import Encoder

GROUP = "fusionseg.encoders"


class UnknownEncoderError(KeyError):
    """No encoder of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class EncoderPluginError(ImportError):
    """A registered encoder could not be imported or built."""


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of every registered encoder, sorted."""
    return sorted(_entry_points())


def _package_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def package_of(name: str) -> str:
    """`"<distribution> <version>"` of the package that registers encoder `name`."""
    eps = _entry_points()
    return _package_of(eps[name]) if name in eps else "not registered"


def encoder_class(name: str) -> type[Encoder] | Any:
    """The class (or factory) registered under `name`, imported."""
    eps = _entry_points()
    if name not in eps:
        raise UnknownEncoderError(
            f"unknown encoder {name!r}; available: {', '.join(sorted(eps)) or '(none)'}. "
            f"Third-party encoders register under the entry-point group {GROUP!r} (see docs/plugins.md)."
        )
    ep = eps[name]
    try:
        return ep.load()
    except Exception as err:  # any import-time failure of a plugin is reported the same way
        raise EncoderPluginError(
            f"encoder {name!r} is registered by {_package_of(ep)} as {ep.value!r}, "
            f"but importing it failed: {type(err).__name__}: {err}"
        ) from err


def build(name: str, **kwargs: Any) -> Encoder:
    """Build the encoder registered under `name` with keyword arguments (e.g. `weights=PATH`)."""
    factory = encoder_class(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        raise TypeError(
            f"encoder {name!r} does not take {sorted(kwargs)}: {err}. It takes {name}{inspect.signature(factory)}"
        ) from err
    encoder = factory(**kwargs)
    if not isinstance(encoder, Encoder):
        raise EncoderPluginError(
            f"encoder {name!r} ({_entry_points()[name].value}) built a {type(encoder).__name__}, "
            f"not a fusionseg.encoders.Encoder"
        )
    return encoder


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`"NAME:key=value,key=value"` -> `("NAME", {key: value})`; values are read as YAML scalars.

    >>> parse_spec("timm:model_name=resnet18,out_indices=[1,2,3,4]")
    ('timm', {'model_name': 'resnet18', 'out_indices': [1, 2, 3, 4]})
    """
    name, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"encoder spec {spec!r}: {item!r} is not key=value (expected NAME:key=value,...)")
        kwargs[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return name.strip(), kwargs


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, so list values survive."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [it for it in items if it.strip()]
