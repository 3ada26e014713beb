"""The hot-swap benchmark's bookkeeping: which window a message counts in, and its summary."""

from __future__ import annotations

import pytest

from benchmarks.hot_swap import Sample, split_by_window, window_summary


def answered(sent_at: float, latency_ms: float = 10.0) -> Sample:
    return Sample(sent_at, latency_ms, "answered")


def test_messages_count_in_the_window_they_were_sent_in() -> None:
    samples = [answered(t) for t in (0.0, 4.9, 5.0, 9.9, 10.0, 12.5, 13.0, 20.0)]
    windows = split_by_window(samples, warmup_end=5.0, promoted=10.0, switched=13.0)
    sent = {name: [s.sent_at for s in group] for name, group in windows.items()}
    assert sent == {
        "warmup": [0.0, 4.9],
        "before": [5.0, 9.9],
        "during": [10.0, 12.5],
        "after": [13.0, 20.0],
    }


def test_a_swap_seen_at_once_leaves_the_during_window_empty() -> None:
    windows = split_by_window([answered(1.0), answered(2.0)], 0.0, 1.5, 1.5)
    assert [len(windows[name]) for name in ("before", "during", "after")] == [1, 0, 1]


def test_windows_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="promoted <= switched"):
        split_by_window([], warmup_end=5.0, promoted=10.0, switched=9.0)


def test_the_summary_counts_what_the_bot_did_not_answer_and_times_the_rest() -> None:
    samples = [answered(float(i), latency_ms=float(i + 1)) for i in range(100)]
    samples += [
        Sample(1.0, None, "handed_off"),
        Sample(2.0, None, "refused"),
        Sample(3.0, None, "unanswered"),
        Sample(4.0, None, "unanswered"),
    ]
    summary = window_summary(samples)
    assert (summary["messages"], summary["answered"]) == (104, 100)
    assert summary["not_answered"] == {"handed_off": 1, "refused": 1, "unanswered": 2}
    assert summary["median_ms"] in (50.0, 51.0)
    assert summary["p99_ms"] == 99.0
    assert summary["max_ms"] == 100.0


def test_a_window_without_answers_has_no_latencies() -> None:
    summary = window_summary([Sample(1.0, None, "unanswered")])
    assert summary["answered"] == 0 and "median_ms" not in summary
