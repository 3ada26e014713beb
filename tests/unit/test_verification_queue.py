"""The verification queue's order: unhelpful first, then smallest margin, near-duplicates of
one predicted intent collapsed, nothing lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from handoff.learning.verification_queue import QueueEntry, margin, order_queue, words


def entry(
    id: int, text: str, margin: float, intent: str = "greet", reason: str = "uncertain"
) -> QueueEntry:
    return QueueEntry(id, text, intent, reason, margin)


def test_margin_is_best_minus_second_best_without_the_fallback() -> None:
    ranking = [
        {"name": "nlu_fallback", "confidence": 0.9},
        {"name": "greet", "confidence": 0.5},
        {"name": "goodbye", "confidence": 0.2},
        {"name": "thanks", "confidence": 0.3},
    ]
    assert margin(ranking, 0.5) == 0.5 - 0.3
    assert margin([{"name": "greet", "confidence": 0.7}], 0.7) == 0.7
    assert margin(None, 0.4) == 0.4
    assert margin([], 0.4) == 0.4


def test_words_ignore_case_punctuation_and_order() -> None:
    assert words("Block my card!") == words("my card, block") == {"block", "my", "card"}
    assert words("don't") == {"don't"}


def test_unhelpful_first_then_smallest_margin_then_arrival() -> None:
    queue = [
        entry(1, "what time is it", 0.40),
        entry(2, "where is my parcel", 0.05, intent="track"),
        entry(3, "you are useless", 0.90, intent="insult", reason="unhelpful"),
        entry(4, "how much is a transfer", 0.05, intent="fees"),
    ]
    assert [group.lead.id for group in order_queue(queue)] == [3, 2, 4, 1]


def test_near_duplicates_of_one_intent_are_one_group_led_by_the_most_instructive() -> None:
    queue = [
        entry(1, "hello there", 0.30),
        entry(2, "Hello there!", 0.10),
        entry(3, "there hello", 0.50),
        entry(4, "hello there", 0.20, intent="goodbye"),  # another prediction: its own entry
        entry(5, "hello over there my friend", 0.05),  # too different
    ]
    groups = order_queue(queue)
    assert [group.ids for group in groups] == [(5,), (2, 1, 3), (4,)]


def test_one_word_more_in_a_long_message_is_still_a_duplicate() -> None:
    long = "i want to block my debit card right now"
    groups = order_queue([entry(1, long, 0.2), entry(2, long + " please", 0.3)])
    assert [group.ids for group in groups] == [(1, 2)]


entries = st.lists(
    st.builds(
        QueueEntry,
        id=st.integers(1, 10_000),
        text=st.sampled_from(["hi", "hi!", "hello", "block my card", "card block", "my card"]),
        predicted_intent=st.sampled_from(["greet", "block_card"]),
        reason=st.sampled_from(["uncertain", "unhelpful"]),
        margin=st.floats(0, 1),
    ),
    unique_by=lambda e: e.id,
    max_size=30,
)


@given(entries)
def test_every_entry_is_in_exactly_one_group_of_one_intent(queue: list[QueueEntry]) -> None:
    groups = order_queue(queue)
    ids = [i for group in groups for i in group.ids]
    assert sorted(ids) == sorted(e.id for e in queue)
    for group in groups:
        assert {e.predicted_intent for e in (group.lead, *group.duplicates)} == {
            group.lead.predicted_intent
        }


@given(entries)
def test_leads_are_in_priority_order_and_lead_their_group(queue: list[QueueEntry]) -> None:
    def priority(e: QueueEntry) -> tuple[bool, float, int]:
        return (e.reason != "unhelpful", e.margin, e.id)

    groups = order_queue(queue)
    leads = [priority(group.lead) for group in groups]
    assert leads == sorted(leads)
    for group in groups:
        assert all(priority(group.lead) <= priority(d) for d in group.duplicates)
