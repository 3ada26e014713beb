"""Our JSON encoding (handoff.core.json_codec) writes what json.dumps would, compactly."""

from __future__ import annotations

import enum
import json
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff.core import json_codec

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_what_it_writes_json_reads_back(value: Any) -> None:
    assert json.loads(json_codec.dumps(value)) == value
    assert json_codec.loads(json_codec.dumps_text(value)) == value


def test_it_writes_compact_utf8() -> None:
    assert json_codec.dumps({"text": "café 😀", "n": [1, 2.5]}) == (
        '{"text":"café 😀","n":[1,2.5]}'.encode()
    )


class Level(enum.IntEnum):
    HIGH = 2


def test_numbers_json_dumps_accepts_are_written_as_their_value() -> None:
    value = {"confidence": np.float32(0.5), "count": np.int64(3), 7: Level.HIGH}
    assert json.loads(json_codec.dumps(value)) == {"confidence": 0.5, "count": 3, "7": 2}


def test_integers_beyond_64_bits_are_still_written() -> None:
    assert json_codec.dumps({"big": 2**70}) == b'{"big":1180591620717411303424}'


def test_what_is_not_json_is_refused_as_json_dumps_refuses_it() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_codec.dumps({"when": object()})
    with pytest.raises(ValueError, match="expected a string key"):
        json_codec.loads(b"{not json")


def test_what_it_returns_costs_its_own_size_to_keep() -> None:
    """orjson's result holds a 4 KiB buffer: kept per connection, that was 4 KiB each."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [json_codec.dumps({"type": "ack", "id": f"m{number}"}) for number in range(1000)]
        per_frame = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_frame < 200
