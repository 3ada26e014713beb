"""The bundled bot's custom actions (bot/actions), run directly against a temporary card table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from rasa_sdk import Tracker
from rasa_sdk.events import ConversationPaused, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from bot.actions import (
    ActionFreezeCard,
    ActionResetTransfer,
    ActionUnfreezeCard,
    ValidateLostCardForm,
    ValidateUnfreezeCardForm,
    cards,
)
from bot.actions.actions import last4_from
from tests.conftest import PROJECT_ROOT

DOMAIN: dict[str, Any] = yaml.safe_load(
    (PROJECT_ROOT / "bot" / "domain" / "assistant.yml").read_text(encoding="utf-8")
)


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh card table in a temporary SQLite file (the URL), seeded on first use."""
    url = f"sqlite:///{tmp_path / 'cards.db'}"
    monkeypatch.setenv(cards.DATABASE_URL_VARIABLE, url)
    yield url
    cards.dispose_engines()


def tracker(
    slots: dict[str, Any] | None = None,
    *,
    extracted: dict[str, Any] | None = None,
    active_loop: str | None = None,
) -> Tracker:
    """A tracker with ``slots`` set, and ``extracted`` as slot candidates set by the user's
    latest message (what a form's validation action validates)."""
    extracted = extracted or {}
    events = [
        {"event": "action", "name": "action_listen"},
        {"event": "user", "text": "...", "parse_data": {}},
        *[SlotSet(name, value) for name, value in extracted.items()],
    ]
    return Tracker(
        sender_id="test",
        slots={**(slots or {}), **extracted},
        latest_message={"text": "...", "intent": {"name": "inform"}, "entities": []},
        events=events,
        paused=False,
        followup_action=None,
        active_loop={"name": active_loop} if active_loop else {},
        latest_action_name="action_listen",
    )


def responses(dispatcher: CollectingDispatcher) -> list[str]:
    return [message["response"] for message in dispatcher.messages]


def test_the_default_database_is_under_var_and_the_variable_is_read_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(cards.DATABASE_URL_VARIABLE, raising=False)
    assert cards.database_url() == f"sqlite:///{PROJECT_ROOT / 'var' / 'larkspur-cards.db'}"
    monkeypatch.setenv(cards.DATABASE_URL_VARIABLE, "sqlite:////elsewhere/cards.db")
    assert cards.database_url() == "sqlite:////elsewhere/cards.db"


@pytest.mark.parametrize(
    ("said", "digits"),
    [
        ("4242", "4242"),
        ("it ends in 4242", "4242"),
        (7310, "7310"),
        (["ending 1881"], "1881"),
        ("1234 5678 9012 3456", "3456"),
        ("42424", None),
        ("200 euros", None),
        (None, None),
    ],
)
def test_last4_from_takes_the_four_digits_out_of_what_was_said(
    said: Any, digits: str | None
) -> None:
    assert last4_from(said) == digits


async def test_reset_transfer_clears_the_transfer_slots() -> None:
    dispatcher = CollectingDispatcher()
    slots = {"amount": "200 euros", "account_type": "savings", "requested_slot": None}
    events = await ActionResetTransfer().run(dispatcher, tracker(slots), DOMAIN)
    assert events == [
        SlotSet("amount", None),
        SlotSet("account_type", None),
        SlotSet("requested_slot", None),
    ]
    assert dispatcher.messages == []


def test_seeding_is_idempotent_and_leaves_existing_rows_alone(database: str) -> None:
    cards.ensure_database()
    cards.ensure_database()
    assert cards.freeze("4242", "lost") == "frozen"
    cards.dispose_engines()  # as a new process would, with the same database file
    engine = cards.ensure_database()
    with engine.connect() as connection:
        rows = connection.execute(sa.select(cards.cards).order_by("last4")).all()
    assert [(r.last4, r.card_type, r.status, r.frozen_reason) for r in rows] == [
        ("1881", "credit", "active", None),
        ("4242", "debit", "frozen", "lost"),
        ("7310", "debit", "frozen", "app"),
    ]
    with engine.begin() as connection:
        connection.execute(sa.delete(cards.cards).where(cards.cards.c.last4 == "1881"))
    cards.dispose_engines()
    cards.ensure_database()  # the table is not empty: no seed row comes back
    assert cards.find("1881") is None


def test_two_processes_creating_the_table_at_once_seed_it_once(database: str) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    engines = [sa.create_engine(database, future=True) for _ in range(2)]

    def start(engine: sa.engine.Engine) -> None:
        barrier.wait()
        try:
            cards._create_and_seed(engine)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert not errors
    assert {card.last4 for card in map(cards.find, ["4242", "1881", "7310"]) if card} == {
        "4242",
        "1881",
        "7310",
    }


async def test_freeze_a_lost_card_then_a_second_report_is_refused(database: str) -> None:
    slots = {"card_type": "debit", "card_last4": "4242", "requested_slot": None}
    reset = [SlotSet("card_type"), SlotSet("card_last4"), SlotSet("requested_slot")]

    dispatcher = CollectingDispatcher()
    events = await ActionFreezeCard().run(dispatcher, tracker(slots), DOMAIN)
    assert responses(dispatcher) == ["utter_lost_card_frozen"]
    assert dispatcher.messages[0]["card_last4"] == "4242"
    assert dispatcher.messages[0]["card_type"] == "debit"
    assert events == reset
    card = cards.find("4242")
    assert card is not None and card.status == "frozen" and card.frozen_reason == "lost"

    dispatcher = CollectingDispatcher()
    events = await ActionFreezeCard().run(dispatcher, tracker(slots), DOMAIN)
    assert responses(dispatcher) == ["utter_card_already_frozen"]
    assert events == reset


def test_a_card_frozen_in_the_app_and_then_reported_lost_needs_a_person(database: str) -> None:
    assert cards.freeze("7310", "lost") == "already_frozen"
    assert cards.unfreeze("7310") == "needs_person"
    card = cards.find("7310")
    assert card is not None and card.status == "frozen" and card.frozen_reason == "lost"


async def test_lost_card_form_accepts_the_digits_of_a_card_of_the_named_type(
    database: str,
) -> None:
    dispatcher = CollectingDispatcher()
    events = await ValidateLostCardForm().run(
        dispatcher,
        tracker(
            {"card_type": "debit"},
            extracted={"card_last4": "it ends in 4242"},
            active_loop="lost_card_form",
        ),
        DOMAIN,
    )
    assert events == [SlotSet("card_last4", "4242")]
    assert dispatcher.messages == []


@pytest.mark.parametrize(
    ("card_type", "said", "digits"),
    [
        ("debit", "it ends in 9999", "9999"),  # no such card
        ("credit", "4242", "4242"),  # a debit card
    ],
)
async def test_lost_card_form_refuses_an_unknown_card(
    database: str, card_type: str, said: str, digits: str
) -> None:
    dispatcher = CollectingDispatcher()
    events = await ValidateLostCardForm().run(
        dispatcher,
        tracker(
            {"card_type": card_type}, extracted={"card_last4": said}, active_loop="lost_card_form"
        ),
        DOMAIN,
    )
    assert events == [SlotSet("card_last4", None)]
    assert responses(dispatcher) == ["utter_unknown_card"]
    assert dispatcher.messages[0]["card_last4"] == digits
    assert dispatcher.messages[0]["card_type"] == card_type


async def test_lost_card_form_checks_digits_said_first_against_the_card_type(
    database: str,
) -> None:
    """ "I lost the card ending in 4242" fills the digits first; "credit" does not fit them."""
    dispatcher = CollectingDispatcher()
    events = await ValidateLostCardForm().run(
        dispatcher,
        tracker(
            {"card_last4": "4242"}, extracted={"card_type": "credit"}, active_loop="lost_card_form"
        ),
        DOMAIN,
    )
    assert events == [SlotSet("card_type", "credit"), SlotSet("card_last4", None)]
    assert responses(dispatcher) == ["utter_unknown_card"]


async def test_unfreeze_form_accepts_any_known_card_and_refuses_others(database: str) -> None:
    dispatcher = CollectingDispatcher()
    events = await ValidateUnfreezeCardForm().run(
        dispatcher,
        tracker(extracted={"card_last4": "ending 1881"}, active_loop="unfreeze_card_form"),
        DOMAIN,
    )
    assert events == [SlotSet("card_last4", "1881")]
    assert dispatcher.messages == []

    events = await ValidateUnfreezeCardForm().run(
        dispatcher,
        tracker(extracted={"card_last4": "1234"}, active_loop="unfreeze_card_form"),
        DOMAIN,
    )
    assert events == [SlotSet("card_last4", None)]
    assert responses(dispatcher) == ["utter_unknown_card"]


async def test_unfreeze_a_card_frozen_in_the_app(database: str) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionUnfreezeCard().run(dispatcher, tracker({"card_last4": "7310"}), DOMAIN)
    assert responses(dispatcher) == ["utter_card_unfrozen"]
    assert dispatcher.messages[0]["card_type"] == "debit"
    assert events == [SlotSet("card_last4"), SlotSet("requested_slot")]
    card = cards.find("7310")
    assert card is not None and card.status == "active" and card.frozen_reason is None


async def test_unfreeze_an_active_card_says_it_is_not_frozen(database: str) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionUnfreezeCard().run(dispatcher, tracker({"card_last4": "1881"}), DOMAIN)
    assert responses(dispatcher) == ["utter_card_not_frozen"]
    assert events == [SlotSet("card_last4"), SlotSet("requested_slot")]
    card = cards.find("1881")
    assert card is not None and card.status == "active"


async def test_unfreeze_a_card_reported_lost_hands_the_conversation_to_a_person(
    database: str,
) -> None:
    assert cards.freeze("4242", "lost") == "frozen"
    dispatcher = CollectingDispatcher()
    events = await ActionUnfreezeCard().run(dispatcher, tracker({"card_last4": "4242"}), DOMAIN)
    assert responses(dispatcher) == ["utter_unfreeze_needs_person"]
    assert events[-1] == ConversationPaused()
    assert SlotSet("card_last4") in events
    card = cards.find("4242")
    assert card is not None and card.status == "frozen" and card.frozen_reason == "lost"


def test_the_domain_lists_every_custom_action() -> None:
    names = {
        action.name()
        for action in (
            ActionFreezeCard(),
            ActionResetTransfer(),
            ActionUnfreezeCard(),
            ValidateLostCardForm(),
            ValidateUnfreezeCardForm(),
        )
    }
    assert names == set(DOMAIN["actions"])
    for response in (
        "utter_unknown_card",
        "utter_lost_card_frozen",
        "utter_card_already_frozen",
        "utter_card_unfrozen",
        "utter_card_not_frozen",
        "utter_unfreeze_needs_person",
    ):
        assert response in DOMAIN["responses"]
