"""What reaches the terminal of a `fusionseg` command: known-harmless warnings and advertising are filtered here,
in one place, each with the reason; fusionseg's own warnings and every other Lightning message pass.

`quiet_known_noise()` is called by the `fusionseg` command before Lightning starts; the Python API
leaves the user's warning and logging settings alone.
"""

from __future__ import annotations

import logging
import re
import warnings

# (message regex, why it is safe to hide). Matched against the start of the warning text.
HARMLESS_WARNINGS: tuple[tuple[str, str], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated",
     "Lightning's own use of torch's pytree on newer torch; nothing a user can change"),
    (r"Found \d+ module\(s\) in eval mode at the start of training",
     "the frozen auxiliary encoder is kept in eval mode on purpose (its BatchNorm/dropout must not train)"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval",
     "runs here are step-based; losses are logged every log_every_n_steps optimizer steps across epochs"),
)
# Lightning's log records that advertise services rather than report on the run.
ADVERTISING = re.compile(r"^\s*💡 Tip:")
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropAdvertising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not ADVERTISING.match(record.getMessage())


_FILTER = _DropAdvertising()


def quiet_known_noise() -> None:
    """Hide the warnings of `HARMLESS_WARNINGS` and Lightning's tips (idempotent)."""
    for pattern, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
