"""The intent-guess bookkeeping: the newest relayed message of a conversation is guessed."""

from __future__ import annotations

from handoff.conversations.intent_guesses import IntentGuesses, unguessed_parse_data


def test_only_messages_with_a_newer_one_waiting_are_skipped() -> None:
    guesses = IntentGuesses()
    guesses.relayed("c1", 1, now=10.0)
    guesses.relayed("c2", 2, now=11.0)
    guesses.relayed("c1", 3, now=12.0)
    assert guesses.lag_seconds(now=15.0) == 5.0  # message 1 waits since 10.0
    assert guesses.superseded("c1", 1)  # message 3 of c1 waits too
    guesses.done("c1", 1)
    assert not guesses.superseded("c2", 2)  # other conversations are not affected
    guesses.done("c2", 2)
    assert not guesses.superseded("c1", 3)
    guesses.done("c1", 3)
    assert guesses.skipped == 1
    assert guesses.lag_seconds(now=20.0) == 0.0


def test_a_message_logged_without_nlu_has_no_intent_and_no_entities() -> None:
    parse_data = unguessed_parse_data("hello")
    assert parse_data["intent"]["name"] is None and parse_data["entities"] == []
    assert parse_data["text"] == "hello"
