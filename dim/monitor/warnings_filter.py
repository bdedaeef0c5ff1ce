"""Quiet by default: the third-party warnings and tips that say nothing to a user of ``dim``.

Each filter is narrow: one library's message (and, for Python warnings, its category), so any
other warning -- ours (``warning: ...`` lines, :func:`warnings.warn` in ``dim``), a new one of
a library, one about the user's own settings -- still shows.  ``DIM_SHOW_ALL_WARNINGS=1``
installs none of them (to see everything while debugging).

Filtered, and why they do not concern the user:

- torch's ``isinstance(treespec, LeafSpec)`` FutureWarning, raised in Lightning's own code
  (``pytorch_lightning/utilities/_pytree.py``), not ours, on every run;
- torch's DataLoader ``'pin_memory' argument is set as true but no accelerator is found``:
  Lightning's dataloaders pin memory when they might feed a GPU; on a CPU run it is a no-op;
- Lightning's "Tip: ... try installing litlogger" advert, printed on every run.

Lightning's hints about the user's own settings (too few loader workers, a GPU left unused, a
logging interval longer than the epoch) stay: they may concern the user.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

#: (message regex, category, module regex) of :func:`warnings.filterwarnings`
WARNING_FILTERS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"(pytorch_)?lightning"),
    # bf16-mixed (the default on CPUs with native bf16) only changes the size estimate it prints
    (
        r"Precision \S+ is not supported by the model summary",
        UserWarning,
        r"(pytorch_)?lightning",
    ),
    (
        r"'pin_memory' argument is set as true but no accelerator",
        UserWarning,
        r"torch\.utils\.data",
    ),
)
#: the start of the log records (Lightning's ``rank_zero_info``) that are dropped
LOG_PREFIXES: tuple[str, ...] = ("💡 Tip: For seamless cloud logging",)
#: the loggers Lightning's rank-zero helpers write to
LIGHTNING_LOGGERS = (
    "lightning_fabric.utilities.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LOG_PREFIXES)


_LOG_FILTER = _DropPrefixes()


def quiet_third_party() -> None:
    """Install the filters above (idempotent); nothing when ``DIM_SHOW_ALL_WARNINGS=1``."""
    if os.environ.get("DIM_SHOW_ALL_WARNINGS") == "1":
        return
    for message, category, module in WARNING_FILTERS:
        # A filter with a module regex matches the module the warning is attributed to (its
        # stacklevel's caller); the ones without stay narrow by their exact message.
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


def is_filtered(message: str) -> bool:
    """Whether a line of output is one of the messages this module silences (for tests)."""
    return any(re.search(m, message) for m, _, _ in WARNING_FILTERS) or message.lstrip().startswith(
        LOG_PREFIXES
    )
