"""The sentence-encoder featurizer: the encoder in this process (numpy only), the Rasa component
in a subprocess (Rasa and TensorFlow never load in the pytest process; see conftest.py).
No training: the component is created and run the way Rasa's graph runs it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bot.components.sentence_encoder import EMBEDDING_DIMENSION, encode
from tests.unit.rasa_script import run_rasa_script

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPONENT = "bot.components.sentence_encoder_featurizer.SentenceEncoderFeaturizer"


def test_embeddings_have_the_right_shape_and_unit_length() -> None:
    vectors = encode(["I lost my card", "what is my balance", "hola, ¿qué tal?"])
    assert vectors.shape == (3, EMBEDDING_DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encode([]).shape == (0, EMBEDDING_DIMENSION)


def test_embeddings_are_deterministic() -> None:
    texts = ["please block my credit card", "how much is in savings"]
    first = encode(texts)
    assert np.array_equal(first, encode(texts))
    # one at a time (as when parsing) or in a batch (as when training): the same up to rounding
    single = np.vstack([encode([text]) for text in texts])
    assert np.allclose(first, single, atol=1e-5)


def test_embeddings_carry_meaning() -> None:
    lost, missing, weather = encode(
        ["I lost my credit card", "my card is missing", "will it rain tomorrow"]
    )
    assert float(lost @ missing) > float(lost @ weather) + 0.2


def test_the_diet_alternative_with_the_encoder_is_the_diet_config_plus_the_featurizer() -> None:
    default = yaml.safe_load((PROJECT_ROOT / "bot" / "config-diet.yml").read_text())
    alternative = yaml.safe_load((PROJECT_ROOT / "bot" / "config-sentence-encoder.yml").read_text())
    featurizers = [c for c in alternative["pipeline"] if c["name"] == COMPONENT]
    assert len(featurizers) == 1
    names = [c["name"] for c in alternative["pipeline"]]
    assert names.index(COMPONENT) < names.index("DIETClassifier")
    assert names.index(COMPONENT) > names.index("WhitespaceTokenizer")
    rest = {**alternative, "pipeline": [c for c in alternative["pipeline"] if c not in featurizers]}
    assert rest == default, "bot/config-sentence-encoder.yml drifted from bot/config-diet.yml"


def test_the_default_config_uses_the_featurizer_and_no_tensorflow_component() -> None:
    default = yaml.safe_load((PROJECT_ROOT / "bot" / "config.yml").read_text())
    names = [c["name"] for c in default["pipeline"]] + [p["name"] for p in default["policies"]]
    assert COMPONENT in names
    assert not {"DIETClassifier", "TEDPolicy", "ResponseSelector", "UnexpecTEDIntentPolicy"} & set(
        names
    ), "a TensorFlow component in bot/config.yml: model loads take tens of seconds again"


RASA_SCRIPT = textwrap.dedent(
    """
    import json, warnings
    warnings.filterwarnings("ignore")
    import numpy as np
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
    from rasa.shared.exceptions import InvalidConfigException
    from rasa.shared.nlu.constants import TEXT
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData
    from rasa.utils.common import module_path_from_class
    from bot.components.sentence_encoder_featurizer import SentenceEncoderFeaturizer as F

    context = ExecutionContext(GraphSchema({}), node_name="sentence_encoder")
    tokenizer = WhitespaceTokenizer.create(
        WhitespaceTokenizer.get_default_config(), None, None, context
    )
    config = {**F.get_default_config(), "batch_size": 2}
    featurizer = F.create(config, None, None, context)

    texts = ["I lost my card", "what is my balance", "block my card please"]
    data = TrainingData([Message.build(text=t, intent="x") for t in texts])
    tokenizer.process_training_data(data)
    featurizer.process_training_data(data)
    live = [Message.build(text=t) for t in texts[:2]] + [Message.build(text="")]
    tokenizer.process(live)
    featurizer.process(live)

    out = {"training": [], "live": []}
    for key, messages in (("training", data.training_examples), ("live", live)):
        for message in messages:
            dense = [f for f in message.features if f.attribute == TEXT and f.is_dense()]
            out[key].append([
                {
                    "type": f.type,
                    "shape": list(f.features.shape),
                    "origin": f.origin,
                    "vector": f.features[0].tolist(),
                }
                for f in dense
            ])
    try:
        F.create({**config, "threads": 0}, None, None, context)
        out["invalid_config"] = "accepted"
    except InvalidConfigException as error:
        out["invalid_config"] = str(error)
    out["path"] = module_path_from_class(F)
    out["languages"] = F.supported_languages()
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def rasa_run() -> dict[str, Any]:
    return run_rasa_script(RASA_SCRIPT)


def test_component_adds_one_sentence_feature_per_message(rasa_run: dict[str, Any]) -> None:
    for features in rasa_run["training"] + rasa_run["live"][:2]:
        # only a sentence feature: DIET takes its sequence features from the sparse featurizers
        assert [(f["type"], f["shape"], f["origin"]) for f in features] == [
            ("sentence", [1, EMBEDDING_DIMENSION], "sentence_encoder")
        ]
    assert rasa_run["live"][2] == []  # an empty text gets no features


def test_component_features_match_training_and_parsing(rasa_run: dict[str, Any]) -> None:
    training = np.array([features[0]["vector"] for features in rasa_run["training"][:2]])
    live = np.array([features[0]["vector"] for features in rasa_run["live"][:2]])
    assert np.allclose(training, live, atol=1e-5)
    assert np.allclose(training, encode(["I lost my card", "what is my balance"]), atol=1e-5)


def test_component_config_and_registration(rasa_run: dict[str, Any]) -> None:
    assert "threads" in rasa_run["invalid_config"]
    assert rasa_run["path"] == COMPONENT
    assert "en" in rasa_run["languages"]
