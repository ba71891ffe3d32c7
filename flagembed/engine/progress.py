"""The one tqdm helper: off for small jobs and when stderr is not a terminal, unless asked."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

AUTO_MIN_ITEMS = 1000


def progress_bar(
    total: int, show: bool | None, desc: str, unit: str = "it", min_items: int = AUTO_MIN_ITEMS
) -> Any:
    """A tqdm bar over ``total`` items; ``show=None`` decides automatically (``min_items`` or more, a TTY)."""
    if show is None:
        show = total >= min_items and sys.stderr.isatty()
    return tqdm(total=total, disable=not show, desc=desc, unit=unit, leave=False)
