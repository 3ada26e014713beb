"""The default pipeline's intent classifier (Rasa's logistic regression with ``C``), run in a
subprocess the way Rasa's graph runs it (Rasa never loads in the pytest process): it trains,
ranks, persists and loads with its ``C``, and refuses a bad one."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.rasa_script import run_rasa_script

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPONENT = "bot.components.intent_classifier.SentenceIntentClassifier"

RASA_SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile, warnings
    from pathlib import Path
    warnings.filterwarnings("ignore")
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
    from rasa.shared.exceptions import InvalidConfigException
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData
    from rasa.utils.common import module_path_from_class
    from bot.components.intent_classifier import SentenceIntentClassifier as C
    from bot.components.sentence_encoder_featurizer import SentenceEncoderFeaturizer as F

    context = ExecutionContext(GraphSchema({}), node_name="classifier")
    tokenizer = WhitespaceTokenizer.create(
        WhitespaceTokenizer.get_default_config(), None, None, context
    )
    featurizer = F.create(F.get_default_config(), None, None, context)
    examples = {
        "lost_card": ["I lost my card", "my card is gone", "cannot find my debit card"],
        "balance": ["what is my balance", "how much money do I have", "show my balance"],
        "greet": ["hello", "hi there", "good morning"],
    }
    data = TrainingData(
        [Message.build(text=t, intent=i) for i, texts in examples.items() for t in texts]
    )
    tokenizer.process_training_data(data)
    featurizer.process_training_data(data)

    def parse(component, text):
        [message] = [Message.build(text=text)]
        tokenizer.process([message])
        featurizer.process([message])
        component.process([message])
        return message.get("intent"), message.get("intent_ranking")

    storage = LocalModelStorage(Path(tempfile.mkdtemp()))
    resource = Resource("classifier")
    out = {"path": module_path_from_class(C)}
    for value in (1.0, 10.0):
        config = {**C.get_default_config(), "C": value}
        trained = C.create(config, storage, Resource(f"c{value}"), context)
        trained.train(data)
        out[f"C={value}"] = {"C": trained.clf.C, "parse": parse(trained, "I misplaced my card")}
    trained = C.create(C.get_default_config(), storage, resource, context)
    trained.train(data)
    loaded = C.load(C.get_default_config(), storage, resource, context)
    out["default_C"] = trained.clf.C
    out["features"] = type(trained._create_X(data.intent_examples)).__name__
    out["loaded"] = {"C": loaded.clf.C, "same": parse(loaded, "hey") == parse(trained, "hey")}
    out["invalid"] = []
    for bad in (0, -1, "ten", True, None):
        try:
            C.create({**C.get_default_config(), "C": bad}, storage, resource, context)
            out["invalid"].append("accepted")
        except InvalidConfigException as error:
            out["invalid"].append(str(error))
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def rasa_run() -> dict[str, Any]:
    return run_rasa_script(RASA_SCRIPT)


def test_it_is_the_default_configs_classifier() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "bot" / "config.yml").read_text(encoding="utf-8"))
    [classifier] = [c for c in config["pipeline"] if c["name"] == COMPONENT]
    assert classifier["C"] > 1


def test_trains_and_ranks_with_its_c(rasa_run: dict[str, Any]) -> None:
    assert rasa_run["path"] == COMPONENT
    weak, strong = rasa_run["C=1.0"], rasa_run["C=10.0"]
    assert (weak["C"], strong["C"]) == (1.0, 10.0)
    for result in (weak, strong):
        intent, ranking = result["parse"]
        assert intent["name"] == "lost_card"
        assert ranking[0]["name"] == "lost_card"
        assert abs(sum(item["confidence"] for item in ranking) - 1.0) < 1e-6
    # weaker regularisation: a sharper ranking on the same data
    assert strong["parse"][0]["confidence"] > weak["parse"][0]["confidence"]


def test_dense_features_reach_scikit_learn_as_a_dense_array(rasa_run: dict[str, Any]) -> None:
    assert rasa_run["features"] == "ndarray"  # Rasa's own gives a sparse matrix: slower fits


def test_persists_and_loads_with_its_c(rasa_run: dict[str, Any]) -> None:
    assert rasa_run["default_C"] == 10.0
    assert rasa_run["loaded"] == {"C": 10.0, "same": True}


def test_refuses_a_c_that_is_not_a_positive_number(rasa_run: dict[str, Any]) -> None:
    assert len(rasa_run["invalid"]) == 5
    assert all("'C' must be a positive number" in message for message in rasa_run["invalid"])
