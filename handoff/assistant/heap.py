"""Keeping a loaded model's objects out of the cyclic garbage collector's way."""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["freeze_heap"]

logger = logging.getLogger(__name__)


def freeze_heap() -> None:
    """Hide every object alive now (a loaded model is about a million of them) from the cyclic
    garbage collector, which otherwise walks them all in each full collection: pauses of about
    half a second that stall every connection (measured under relay load; about 30 ms after).
    Unfreezes and collects first, so that a retired model's cycles are freed."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    logger.info(
        "Froze %d long-lived objects in %.2f s",
        gc.get_freeze_count(),
        time.perf_counter() - started,
    )
