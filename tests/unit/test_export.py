"""The exporter as a pure function; its output read back by Rasa's own YAML readers."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import yaml

from handoff.learning.export import (
    IN_HELDOUT,
    ApprovedExample,
    ApprovedResponse,
    ApprovedStory,
    ExistingData,
    Skipped,
    build_export,
    build_heldout,
    escape_markup,
    merge_learned,
    merge_nlu,
    normalize,
    redact,
)

EXISTING = ExistingData(
    examples={normalize("what is my balance"): "check_balance"},
    intents=frozenset({"check_balance", "greet"}),
    responses=frozenset({"utter_check_balance", "utter_greet"}),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+bank@example.co.uk please", "write to <email> please"),
        ("my IBAN is DE89 3704 0044 0532 0130 00", "my IBAN is <iban>"),
        ("GB29NWBK60161331926819 is mine", "<iban> is mine"),
        ("card 4111 1111 1111 1111 was charged", "card <card_number> was charged"),
        ("card 4111-1111-1111-1111", "card <card_number>"),
        ("call me on +44 20 7946 0958", "call me on <phone>"),
        ("call 030/1234567 tomorrow", "call <phone> tomorrow"),
        ("I paid 250 euros on 12.03", "I paid 250 euros on 12.03"),
    ],
)
def test_redaction(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_extra_redaction_patterns() -> None:
    assert redact("customer no. LB-123456", [("<customer_id>", r"LB-\d{6}")]) == (
        "customer no. <customer_id>"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see [this](link) now", "see (this)(link) now"),
        ('[card]{"entity": "x"}', '(card)("entity": "x")'),
        ("two\nlines\t here", "two lines here"),
    ],
)
def test_markup_is_neutralised(text: str, expected: str) -> None:
    assert escape_markup(text) == expected


def test_normalize_folds_case_space_and_edge_punctuation() -> None:
    assert normalize("  What IS my   balance?! ") == "what is my balance"


def test_examples_merge_without_duplicates_and_conflicts_are_refused() -> None:
    export = build_export(
        [
            ApprovedExample(1, "What is my balance?", "check_balance"),  # exists already
            ApprovedExample(2, "what is my balance", "account_fees"),  # conflict
            ApprovedExample(3, "Where is my new card", "card_delivery"),
            ApprovedExample(4, "where is my new card!", "card_delivery"),  # same batch
            ApprovedExample(5, "  ", "card_delivery"),
            ApprovedExample(6, "my new card has not arrived", "card_delivery"),
        ],
        [],
        [],
        EXISTING,
    )
    assert export.written == [3, 6]
    assert export.skipped == [
        Skipped(1, "duplicate"),
        Skipped(2, "conflict: already an example of check_balance"),
        Skipped(4, "duplicate"),
        Skipped(5, "empty after redaction"),
    ]
    assert export.nlu["nlu"] == [
        {
            "intent": "card_delivery",
            "examples": "- Where is my new card\n- my new card has not arrived\n",
        }
    ]
    assert export.domain["intents"] == ["card_delivery"]


def test_new_intent_response_and_story() -> None:
    export = build_export(
        [
            ApprovedExample(1, "where is my new card", "card_delivery"),
            ApprovedExample(6, "has my card been posted", "card_delivery"),
        ],
        [
            ApprovedResponse(
                2, "card_delivery", "Cards arrive in 3-5 days; mail help@larkspur.example."
            ),
            ApprovedResponse(3, "greet", "Hello again"),  # utter_greet exists: never overwritten
        ],
        [
            ApprovedStory(
                4,
                "handoff 17",
                [("greet", "utter_greet"), ("card_delivery", "utter_card_delivery")],
            ),
            ApprovedStory(5, "handoff 18", [("unknown_intent", "utter_greet")]),
        ],
        EXISTING,
    )
    assert export.written == [1, 2, 4, 6]
    assert export.rules["rules"] == [
        {
            "rule": "answer card_delivery",
            "steps": [{"intent": "card_delivery"}, {"action": "utter_card_delivery"}],
        }
    ]
    assert export.domain["responses"] == {
        "utter_card_delivery": [{"text": "Cards arrive in 3-5 days; mail <email>."}]
    }
    assert export.stories["stories"] == [
        {
            "story": "handoff 17",
            "steps": [
                {"intent": "greet"},
                {"action": "utter_greet"},
                {"intent": "card_delivery"},
                {"action": "utter_card_delivery"},
            ],
        }
    ]
    assert [s.candidate_id for s in export.skipped] == [3, 5]


def test_exporting_twice_changes_nothing() -> None:
    examples = [
        ApprovedExample(1, "where is my new card", "card_delivery"),
        ApprovedExample(2, "has my card been posted", "card_delivery"),
    ]
    first = build_export(examples, [], [], EXISTING)
    after_first = ExistingData(
        examples={
            **EXISTING.examples,
            normalize("where is my new card"): "card_delivery",
            normalize("has my card been posted"): "card_delivery",
        },
        intents=EXISTING.intents | {"card_delivery"},
        responses=EXISTING.responses,
    )
    second = build_export(examples, [], [], after_first)
    assert first.written == [1, 2]
    merged = merge_learned({}, first)
    assert merge_learned(merged, second) == merged
    assert second.written == []
    assert second.nlu["nlu"] == []
    assert "intents" not in second.domain


def _read_with_rasa(nlu: dict[str, Any], stories: dict[str, Any]) -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from rasa.shared.core.domain import Domain
        from rasa.shared.core.training_data.story_reader.yaml_story_reader import YAMLStoryReader
        from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader

        training_data = RasaYAMLReader().reads(yaml.safe_dump(nlu, sort_keys=False))
        domain = Domain.from_dict(
            {
                "intents": ["greet", "card_delivery"],
                "responses": {
                    "utter_greet": [{"text": "hi"}],
                    "utter_card_delivery": [{"text": "soon"}],
                },
            }
        )
        steps = YAMLStoryReader(domain).read_from_string(yaml.safe_dump(stories, sort_keys=False))
    return training_data, steps


def test_rasa_reads_the_export_back_without_entities_from_user_text() -> None:
    export = build_export(
        [
            ApprovedExample(1, "my card [the blue one](colour) never came", "card_delivery"),
            ApprovedExample(2, "- starts with a dash: and a colon", "card_delivery"),
            ApprovedExample(3, "email me at a@b.com", "card_delivery"),
        ],
        [],
        [
            ApprovedStory(
                4, "handoff 1", [("greet", "utter_greet"), ("card_delivery", "utter_card_delivery")]
            )
        ],
        ExistingData(
            intents=frozenset({"greet"}),
            responses=frozenset({"utter_greet", "utter_card_delivery"}),
        ),
    )
    training_data, steps = _read_with_rasa(export.nlu, export.stories)
    texts = sorted(m.get("text") for m in training_data.intent_examples)
    assert texts == [
        "- starts with a dash: and a colon",
        "email me at <email>",
        "my card (the blue one)(colour) never came",
    ]
    assert all(not m.get("entities") for m in training_data.intent_examples)
    assert {m.get("intent") for m in training_data.intent_examples} == {"card_delivery"}
    assert len(steps) == 1


def test_a_new_intent_with_one_example_waits_with_its_response_and_story() -> None:
    export = build_export(
        [ApprovedExample(1, "where is my new card", "card_delivery")],
        [ApprovedResponse(2, "card_delivery", "Soon.")],
        [ApprovedStory(3, "handoff 1", [("card_delivery", "utter_card_delivery")])],
        EXISTING,
    )
    assert export.written == []
    assert [held.candidate_id for held in export.held] == [1, 2, 3]
    assert "intents" not in export.domain


def test_merge_appends_examples_and_keeps_existing_stories_rules_and_responses() -> None:
    learned: dict[str, dict[str, Any]] = {
        "nlu": {"nlu": [{"intent": "card_delivery", "examples": "- where is my card\n"}]},
        "stories": {"stories": [{"story": "handoff 1", "steps": []}]},
        "rules": {"rules": [{"rule": "answer card_delivery", "steps": []}]},
        "domain": {"intents": ["card_delivery"], "responses": {"utter_card_delivery": []}},
    }
    export = build_export(
        [
            ApprovedExample(1, "has my card been posted", "card_delivery"),
            ApprovedExample(2, "pin letter missing", "pin_letter"),
            ApprovedExample(3, "my pin letter never came", "pin_letter"),
        ],
        [ApprovedResponse(4, "pin_letter", "We will resend it.")],
        [ApprovedStory(5, "handoff 1", [("pin_letter", "utter_pin_letter")])],
        ExistingData(
            examples={normalize("where is my card"): "card_delivery"},
            intents=frozenset({"card_delivery"}),
            responses=frozenset({"utter_card_delivery"}),
        ),
    )
    merged = merge_learned(learned, export)
    assert merged["nlu"]["nlu"] == [
        {"intent": "card_delivery", "examples": "- where is my card\n- has my card been posted\n"},
        {"intent": "pin_letter", "examples": "- pin letter missing\n- my pin letter never came\n"},
    ]
    assert [s["story"] for s in merged["stories"]["stories"]] == ["handoff 1"]
    assert [r["rule"] for r in merged["rules"]["rules"]] == [
        "answer card_delivery",
        "answer pin_letter",
    ]
    assert merged["domain"]["intents"] == ["card_delivery", "pin_letter"]
    assert sorted(merged["domain"]["responses"]) == ["utter_card_delivery", "utter_pin_letter"]


# The held-out test set ------------------------------------------------------------------------


def test_held_out_examples_are_cleaned_deduplicated_and_kept_out_of_training() -> None:
    existing = ExistingData(
        examples=EXISTING.examples,
        intents=EXISTING.intents,
        heldout={normalize("hello friend"): "greet"},
    )
    examples = [
        ApprovedExample(1, "Hi, mail me at ann@example.com", "greet"),
        ApprovedExample(2, "What is my balance?", "check_balance"),  # a training example
        ApprovedExample(3, "hello friend!", "greet"),  # held out already
        ApprovedExample(4, "hello friend", "check_balance"),  # held out under another intent
        ApprovedExample(5, "book a box", "safe_deposit_box"),  # no training examples yet
        ApprovedExample(6, "rent a box", "rent_box"),  # new in this export's training data
        ApprovedExample(7, "   ", "greet"),
    ]
    heldout = build_heldout(examples, existing, trainable=["rent_box"])
    assert heldout.written == [1, 6]
    assert heldout.nlu == [
        {"intent": "greet", "examples": "- Hi, mail me at <email>\n"},
        {"intent": "rent_box", "examples": "- rent a box\n"},
    ]
    assert heldout.skipped == [
        Skipped(2, "already a training example"),
        Skipped(3, "duplicate"),
        Skipped(4, "conflict: already held out as greet"),
        Skipped(7, "empty after redaction"),
    ]
    assert heldout.held == [Skipped(5, "no training examples of safe_deposit_box yet")]


def test_a_held_out_text_is_never_exported_as_training_data() -> None:
    existing = ExistingData(intents=EXISTING.intents, heldout={normalize("hi there"): "greet"})
    export = build_export([ApprovedExample(1, "Hi there!", "greet")], [], [], existing)
    assert export.written == [] and export.skipped == [Skipped(1, IN_HELDOUT)]


def test_merge_nlu_appends_under_the_intent_and_keeps_the_rest() -> None:
    document: dict[str, Any] = {
        "version": "3.1",
        "nlu": [
            {"intent": "greet", "examples": "- hi\n"},
            {"synonym": "savings", "examples": "- savings account\n"},
        ],
    }
    merged = merge_nlu(
        document,
        [{"intent": "greet", "examples": "- hey\n"}, {"intent": "bye", "examples": "- bye\n"}],
    )
    assert merged["version"] == "3.1"
    assert {"synonym": "savings", "examples": "- savings account\n"} in merged["nlu"]
    blocks = {b["intent"]: b["examples"] for b in merged["nlu"] if "intent" in b}
    assert blocks == {"greet": "- hi\n- hey\n", "bye": "- bye\n"}
    assert document["nlu"][0]["examples"] == "- hi\n"  # the input is not changed
