"""Custom actions of the Moonbeam Library help desk.

Everything here is deterministic and in memory: the opening hours and the members with their
loans are constants below, nothing is read from or written to the network or the disk. A renewal
is remembered per conversation (slot ``renewed_member_id``), never in the constants, so one
conversation cannot change what another one sees.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# Opening and closing time per weekday; None means closed all day.
OPENING_HOURS: dict[str, tuple[str, str] | None] = {
    "monday": ("9:00", "20:00"),
    "tuesday": ("9:00", "20:00"),
    "wednesday": ("9:00", "20:00"),
    "thursday": ("9:00", "20:00"),
    "friday": ("9:00", "20:00"),
    "saturday": ("10:00", "16:00"),
    "sunday": None,
}
WEEKLY_HOURS = (
    "Our usual hours are Monday to Friday 9:00 to 20:00 and Saturday 10:00 to 16:00; "
    "we are closed on Sunday."
)

# Library card number -> the member's first name and loans (title, due date).
MEMBERS: dict[str, dict[str, Any]] = {
    "204518": {
        "name": "Ada",
        "loans": [
            ("The Left Hand of Darkness", date(2025, 3, 14)),
            ("A Wizard of Earthsea", date(2025, 3, 21)),
        ],
    },
    "318802": {
        "name": "Bilal",
        "loans": [("Moby-Dick", date(2025, 4, 2))],
    },
    "457001": {"name": "Chen", "loans": []},
}
RENEWAL_PERIOD = timedelta(days=14)


def format_date(day: date) -> str:
    """``Friday 14 March 2025``, independent of the process locale."""
    return f"{WEEKDAYS[day.weekday()].capitalize()} {day.day} {MONTHS[day.month - 1]} {day.year}"


def hours_sentence(weekday: str) -> str:
    """``open from 9:00 to 20:00`` or ``closed`` for a weekday name."""
    hours = OPENING_HOURS[weekday]
    if hours is None:
        return "the library is closed"
    return f"the library is open from {hours[0]} to {hours[1]}"


def loans_of(member_id: str, renewed: bool) -> list[tuple[str, date]]:
    """The member's loans, with the due dates moved by the renewal period when renewed."""
    shift = RENEWAL_PERIOD if renewed else timedelta(0)
    return [(title, due + shift) for title, due in MEMBERS[member_id]["loans"]]


def loans_list(loans: list[tuple[str, date]]) -> str:
    return "\n".join(f"- {title}, due {format_date(due)}" for title, due in loans)


class ActionOpeningHours(Action):
    """Tells the opening hours of the asked day (or of today) and clears the ``day`` slot."""

    def name(self) -> str:
        return "action_opening_hours"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        asked = next(tracker.get_latest_entity_values("day"), None) or tracker.get_slot("day")
        day = str(asked).strip().lower() if asked else "today"
        if day in ("today", "tomorrow"):
            offset = 0 if day == "today" else 1
            weekday = WEEKDAYS[(date.today() + timedelta(days=offset)).weekday()]
            text = f"{day.capitalize()} ({weekday.capitalize()}) {hours_sentence(weekday)}."
            if not asked:
                text = f"{text} {WEEKLY_HOURS}"
        elif day in OPENING_HOURS:
            text = f"On {day.capitalize()} {hours_sentence(day)}."
        else:
            text = WEEKLY_HOURS
        dispatcher.utter_message(text=text)
        return [SlotSet("day", None)]


class ValidateLoansForm(FormValidationAction):
    """Accepts a library card number only if it is 6 digits and belongs to a member."""

    def name(self) -> str:
        return "validate_loans_form"

    async def extract_member_id(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """Takes a number that is not 6 digits long too, so that it is refused with a reason.

        A 6-digit number is a ``member_id`` entity (the regex in data/nlu.yml) and fills the slot
        through its from_entity mapping; this only catches the other numbers in the user's answer.
        """
        if next(tracker.get_latest_entity_values("member_id"), None):
            return {}
        numbers = re.findall(r"\d+", tracker.latest_message.get("text") or "")
        return {"member_id": numbers[0]} if numbers else {}

    def validate_member_id(
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        member_id = str(slot_value or "").strip()
        if len(member_id) != 6 or not member_id.isdigit():
            dispatcher.utter_message(text="A library card number has exactly 6 digits.")
            return {"member_id": None}
        if member_id not in MEMBERS:
            dispatcher.utter_message(
                text=f"Sorry, I can't find library card {member_id}. "
                "Please check the number and try again."
            )
            return {"member_id": None}
        return {"member_id": member_id}


class ActionCheckLoans(Action):
    """Lists the member's books and their due dates."""

    def name(self) -> str:
        return "action_check_loans"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        member_id = tracker.get_slot("member_id")
        if member_id not in MEMBERS:
            dispatcher.utter_message(response="utter_ask_member_id")
            return []
        name = MEMBERS[member_id]["name"]
        loans = loans_of(member_id, tracker.get_slot("renewed_member_id") == member_id)
        if not loans:
            text = f"Hi {name}, you have no books on loan at the moment."
        else:
            count = "1 book" if len(loans) == 1 else f"{len(loans)} books"
            text = f"Hi {name}, you have {count} on loan:\n{loans_list(loans)}"
        dispatcher.utter_message(text=text)
        return []


class ActionRenewLoans(Action):
    """Renews all of the member's loans by 14 days (once per conversation)."""

    def name(self) -> str:
        return "action_renew_loans"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        member_id = tracker.get_slot("member_id")
        if member_id not in MEMBERS:
            dispatcher.utter_message(response="utter_ask_member_id")
            return []
        name = MEMBERS[member_id]["name"]
        loans = loans_of(member_id, renewed=True)
        if not loans:
            dispatcher.utter_message(
                text=f"Hi {name}, you have no books on loan, so there is nothing to renew."
            )
            return []
        if tracker.get_slot("renewed_member_id") == member_id:
            text = f"Your loans are already renewed, {name}. They are due:\n{loans_list(loans)}"
        else:
            count = "your book" if len(loans) == 1 else f"all {len(loans)} of your books"
            text = f"Done, {name}: I've renewed {count} for 14 more days.\n{loans_list(loans)}"
        dispatcher.utter_message(text=text)
        return [SlotSet("renewed_member_id", member_id)]
