"""Keeping long-lived objects (a loaded model's, the server's own) out of the cyclic garbage
collector's way."""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["SERVING_GC_THRESHOLDS", "freeze_heap", "tune_collector_for_serving"]

SERVING_GC_THRESHOLDS = (10_000, 20, 20)
"""Collector thresholds of a serving process (Python's default: 700, 10, 10). Relaying 500
conversations, the defaults ran a full collection every few seconds, 110-170 ms each, which
was the relay's p99; with these and a frozen start-up heap, none in 30 s."""

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


def tune_collector_for_serving() -> None:
    """For a process that has finished starting: collect rarely, and never walk what exists
    now (the libraries, the app). Call once, after start-up."""
    gc.set_threshold(*SERVING_GC_THRESHOLDS)
    freeze_heap()
