"""The `fusionseg` command: `encoders` and `profile` beside LightningCLI's fit/validate/test/predict."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

# Sub-commands that are not Lightning stages, each a module in fusionseg.commands with `main(argv) -> int`.
TOOL_COMMANDS: dict[str, str] = {
    "encoders": "fusionseg.commands.encoders",
    "profile": "fusionseg.commands.profile",
}


def _tool_main(name: str) -> Callable[[Sequence[str]], int]:
    import importlib

    return importlib.import_module(TOOL_COMMANDS[name]).main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOL_COMMANDS:
        return _tool_main(argv[0])(argv[1:])
    from fusionseg.lightning_cli import run_lightning_cli

    run_lightning_cli(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
