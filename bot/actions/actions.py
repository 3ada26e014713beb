"""Custom actions of the Larkspur Bank assistant (run by the rasa-sdk action server).

- ``action_reset_transfer``: forgets the transfer's amount and account once it is done or
  cancelled, so the next transfer asks again.
- ``validate_lost_card_form`` / ``validate_unfreeze_card_form``: accept a card's last four
  digits only for a card in the card table (of the type given, in the lost card form).
- ``action_freeze_card``: freezes a card reported lost.
- ``action_unfreeze_card``: unfreezes a card the customer froze in the app; a card reported lost
  goes to a person (the action returns ``ConversationPaused``, which hands the conversation
  over).

The card table is :mod:`.cards`; its blocking calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ConversationPaused, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import REQUESTED_SLOT
from rasa_sdk.types import DomainDict

from . import cards

__all__ = [
    "ActionFreezeCard",
    "ActionResetTransfer",
    "ActionUnfreezeCard",
    "ValidateLostCardForm",
    "ValidateUnfreezeCardForm",
    "last4_from",
]

CARD_TYPE = "card_type"
CARD_LAST4 = "card_last4"
FOUR_DIGITS = re.compile(r"(?<!\d)\d{4}(?!\d)")


def last4_from(value: Any) -> str | None:
    """The last four digits of a card in what the user said (``"it ends in 4242"``, ``4242``).

    The last group of exactly four digits wins (``"1234 5678 9012 3456"``: ``3456``); None if
    there is none."""
    if value is None:
        return None
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    groups = FOUR_DIGITS.findall(text)
    return str(groups[-1]) if groups else None


def _details(last4: str, card_type: str | None) -> dict[str, str]:
    """Values for a response's {card_last4} and {card_type} (the latter only if known: the
    response's variations without a card type are chosen by the card_type slot)."""
    details = {CARD_LAST4: last4}
    if card_type is not None:
        details[CARD_TYPE] = card_type
    return details


async def _validate_card_last4(
    slot_value: Any, card_type: str | None, dispatcher: CollectingDispatcher
) -> dict[str, Any]:
    """The slot update for a ``card_last4`` candidate: the four digits if a card ends in them
    (and is of ``card_type``, when given), else None after saying the card is unknown."""
    last4 = last4_from(slot_value)
    if last4 is None:
        return {CARD_LAST4: None}  # the form asks for the four digits again
    card = await asyncio.to_thread(cards.find, last4)
    if card is None or (card_type is not None and card.card_type != card_type):
        dispatcher.utter_message(response="utter_unknown_card", **_details(last4, card_type))
        return {CARD_LAST4: None}
    return {CARD_LAST4: last4}


class ActionResetTransfer(Action):
    """Clears the transfer form's slots (after a transfer is done or cancelled)."""

    def name(self) -> str:
        return "action_reset_transfer"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        return [SlotSet("amount", None), SlotSet("account_type", None), SlotSet(REQUESTED_SLOT)]


class ValidateLostCardForm(FormValidationAction):
    """``lost_card_form``: the card's last four digits must be those of a card of the type the
    customer named."""

    def name(self) -> str:
        return "validate_lost_card_form"

    async def validate_card_type(
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        """A new card type after the digits were accepted (they were said first): the digits
        must belong to a card of that type, else they are asked again."""
        last4 = tracker.get_slot(CARD_LAST4)
        if last4 is None or CARD_LAST4 in tracker.slots_to_validate():
            return {CARD_TYPE: slot_value}  # the digits, if any, are checked next
        update = await _validate_card_last4(last4, slot_value, dispatcher)
        return {CARD_TYPE: slot_value, **update}

    async def validate_card_last4(
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        return await _validate_card_last4(slot_value, tracker.get_slot(CARD_TYPE), dispatcher)


class ValidateUnfreezeCardForm(FormValidationAction):
    """``unfreeze_card_form``: the card's last four digits must be those of a known card."""

    def name(self) -> str:
        return "validate_unfreeze_card_form"

    async def validate_card_last4(
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        return await _validate_card_last4(slot_value, None, dispatcher)


class ActionFreezeCard(Action):
    """Freezes the card the lost card form asked for (reason ``lost``), or says it is frozen
    already; then clears the form's slots so a later report asks again."""

    def name(self) -> str:
        return "action_freeze_card"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        card_type = tracker.get_slot(CARD_TYPE)
        last4 = last4_from(tracker.get_slot(CARD_LAST4))
        reset = [SlotSet(CARD_TYPE), SlotSet(CARD_LAST4), SlotSet(REQUESTED_SLOT)]
        if last4 is None:  # the form validated the digits: not expected
            dispatcher.utter_message(response="utter_default")
            return reset
        result = await asyncio.to_thread(cards.freeze, last4, "lost")
        if result == "frozen":
            response = "utter_lost_card_frozen"
        elif result == "already_frozen":
            response = "utter_card_already_frozen"
        else:  # the form validated the digits: only a card deleted meanwhile gets here
            response = "utter_unknown_card"
        dispatcher.utter_message(response=response, **_details(last4, card_type))
        return reset


def _unfreeze(last4: str) -> tuple[cards.UnfreezeResult, cards.Card | None]:
    return cards.unfreeze(last4), cards.find(last4)


class ActionUnfreezeCard(Action):
    """Unfreezes a card the customer froze in the app. A card reported lost may be in someone
    else's hands: the conversation goes to a person (``ConversationPaused``, the last event).
    Clears ``card_last4`` in every case."""

    def name(self) -> str:
        return "action_unfreeze_card"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        last4 = last4_from(tracker.get_slot(CARD_LAST4))
        reset = [SlotSet(CARD_LAST4), SlotSet(REQUESTED_SLOT)]
        if last4 is None:  # the form validated the digits: not expected
            dispatcher.utter_message(response="utter_default")
            return reset
        result, card = await asyncio.to_thread(_unfreeze, last4)
        details = _details(last4, card.card_type if card is not None else None)
        if result == "unfrozen":
            dispatcher.utter_message(response="utter_card_unfrozen", **details)
        elif result == "not_frozen":
            dispatcher.utter_message(response="utter_card_not_frozen", **details)
        elif result == "needs_person":
            dispatcher.utter_message(response="utter_unfreeze_needs_person", **details)
            return [*reset, ConversationPaused()]
        else:
            dispatcher.utter_message(response="utter_unknown_card", **details)
        return reset
