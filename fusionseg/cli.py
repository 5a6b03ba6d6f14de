"""The `fusionseg` command: `encoders` and `profile` beside LightningCLI's fit/validate/test/predict.

`fusionseg --help` lists every command with one line each (the tools' lines are the first line of
their module docstrings, read without importing them, so the help is instant); `fusionseg COMMAND
--help` gives the command's own options.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from fusionseg.threads import configure_threads

# Sub-commands that are not Lightning stages, each a module in fusionseg.commands with `main(argv) -> int`.
TOOL_COMMANDS: dict[str, str] = {
    "encoders": "fusionseg.commands.encoders",
    "profile": "fusionseg.commands.profile",
    "sweep": "fusionseg.commands.sweep",
}

# LightningCLI's stages, in the order a user meets them.
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train: profile the encoders, plan the fusion, train Mask2Former, keep the best checkpoint",
    "validate": "evaluate a checkpoint on the validation split and print the per-class table",
    "test": "evaluate a checkpoint on the test split and print the per-class table",
    "predict": "segment a folder of images: palette label PNGs and overlays",
}
HELP_FLAGS = ("-h", "--help")
VERSION_FLAGS = ("-V", "--version")


def _tool_main(name: str) -> Callable[[Sequence[str]], int]:
    import importlib

    return importlib.import_module(TOOL_COMMANDS[name]).main


def tool_summary(module: str) -> str:
    """The first docstring line of a tool module, without `` `fusionseg NAME ...`: `` (read, not imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return "(not found)"
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    if line.startswith("`") and "`:" in line:  # "`fusionseg profile ...`: what it does" -> "what it does"
        line = line.split("`:", 1)[1].strip()
    return line.rstrip(".")


def version_text() -> str:
    """`fusionseg X (torch Y, lightning Z, Python W)`, what a bug report needs; no heavy import."""
    from fusionseg import __version__

    parts = []
    for dist in ("torch", "lightning"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    python = ".".join(str(v) for v in sys.version_info[:3])
    return f"fusionseg {__version__} ({', '.join(parts)}, Python {python})"


def help_text() -> str:
    rows = dict(LIGHTNING_COMMANDS)
    rows.update({name: tool_summary(module) for name, module in TOOL_COMMANDS.items()})
    width = max(len(name) for name in rows) + 2
    lines = [
        "usage: fusionseg COMMAND [options]      (fusionseg COMMAND --help for a command's options)",
        "",
        "Fuse visual foundation models for segmentation, guided by the label-free metrics SC and EF.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}{text}" for name, text in rows.items()),
        "",
        "options:",
        f"  {'-h, --help'.ljust(width + 6)}show this message and exit",
        f"  {'-V, --version'.ljust(width + 6)}print the version and exit",
        "",
        "demo (synthetic data, reference encoders, CPU, no downloads):",
        "  fusionseg fit --config configs/demo.yaml",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HELP_FLAGS:
        print(help_text())
        return 0
    if argv[0] in VERSION_FLAGS:
        print(version_text())
        return 0
    configure_threads()  # before torch loads: threads for the cores this process may use, idle ones sleep
    if argv[0] in TOOL_COMMANDS:
        return _tool_main(argv[0])(argv[1:])
    if not argv[0].startswith("-") and argv[0] not in LIGHTNING_COMMANDS:
        known = ", ".join([*LIGHTNING_COMMANDS, *TOOL_COMMANDS])
        print(f"fusionseg: unknown command {argv[0]!r}; the commands are {known} (fusionseg --help)", file=sys.stderr)
        return 2
    from fusionseg.console import quiet_known_noise
    from fusionseg.lightning_cli import run_lightning_cli

    quiet_known_noise()
    run_lightning_cli(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
