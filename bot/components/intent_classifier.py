"""Rasa's logistic-regression intent classifier with its regularisation strength exposed.

Rasa's ``LogisticRegressionClassifier`` fixes scikit-learn's ``C`` at 1.0, which is too strong
for the unit-length sentence-encoder vectors it sits on here: the probabilities come out flat
(top intents a few points apart, so the FallbackClassifier's ambiguity rule hands off answers
the model had right) and accuracy drops. And Rasa hands scikit-learn a sparse matrix even when
the features are dense vectors, which makes each optimisation step several times slower than
on a dense array; narrow feature matrices go dense here. Everything else (features, class
weights, ranking, persistence with skops) is Rasa's.
"""

from __future__ import annotations

from typing import Any

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.training_data.message import Message

__all__ = ["DENSE_UP_TO_COLUMNS", "SentenceIntentClassifier"]

DENSE_UP_TO_COLUMNS = 4096
"""Feature matrices this narrow (the 512 encoder dimensions plus a few regex flags) are
converted to dense arrays; wider ones (sparse n-grams) stay sparse."""


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class SentenceIntentClassifier(LogisticRegressionClassifier):
    """``LogisticRegressionClassifier`` plus ``C`` (inverse regularisation strength)."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {**LogisticRegressionClassifier.get_default_config(), "C": 10.0}

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        """Refuse a ``C`` that is not a positive number (at create and at load)."""
        value = config.get("C")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise InvalidConfigException(
                f"{cls.__name__}: 'C' must be a positive number, not {value!r}"
            )

    def __init__(
        self,
        config: dict[str, Any],
        name: str,
        model_storage: ModelStorage,
        resource: Resource,
    ) -> None:
        self.validate_config({**self.get_default_config(), **config})
        super().__init__(config, name, model_storage, resource)
        self.clf.set_params(C=float(self.config["C"]))

    def _create_X(self, messages: list[Message]) -> Any:
        features = super()._create_X(messages)
        if features.shape[1] <= DENSE_UP_TO_COLUMNS:
            return features.toarray()
        return features
