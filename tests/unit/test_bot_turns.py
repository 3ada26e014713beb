"""What a bot turn did, read off real Rasa trackers; failing custom actions recorded (no model,
no action server: Rasa's RemoteAction against a closed port, in a subprocess)."""

from __future__ import annotations

import functools

import pytest
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    ConversationPaused,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from handoff.assistant.bot_turns import bot_turn, turn_start
from handoff.assistant.interface import BotTurn
from tests.unit.rasa_script import run_rasa_script

# Rasa checks a domain against its schema with pykwalify, which loads through pkg_resources
# (deprecation notices of Rasa's dependencies), and warns about slot auto-fill for every
# domain with slots (Rasa's own CLI hides that one).
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Slot auto-fill has been removed:UserWarning"),
]

DOMAIN_YAML = """
version: "3.1"
intents:
  - unfreeze_card
entities:
  - card_last4
slots:
  card_last4:
    type: text
    mappings:
      - type: from_entity
        entity: card_last4
forms:
  unfreeze_card_form:
    required_slots:
      - card_last4
actions:
  - action_unfreeze_card
"""


@functools.cache
def domain() -> Domain:
    return Domain.from_yaml(DOMAIN_YAML)


def tracker(*events: object) -> DialogueStateTracker:
    return DialogueStateTracker.from_events("c1", list(events), domain().slots)


def test_a_turn_lists_actions_with_their_events_and_the_slots_after_it() -> None:
    before = [UserUttered("hi"), ActionExecuted("utter_greet"), BotUttered("Hello")]
    turn_events = [
        UserUttered("unfreeze 7310", {"name": "unfreeze_card", "confidence": 0.9}),
        SlotSet("card_last4", "7310"),  # filled from the message before any action
        ActionExecuted("unfreeze_card_form"),
        ActiveLoop("unfreeze_card_form"),
        ActiveLoop(None),
        ActionExecuted("action_unfreeze_card"),
        BotUttered("A colleague has to do that."),
        ConversationPaused(),
    ]
    done = tracker(*before, *turn_events)

    turn = bot_turn(done, turn_start(done), [{"text": "x", "recipient_id": "c1"}], [])

    assert turn.messages == [{"text": "x"}]
    assert turn.actions == [
        {"name": "action_extract_slots", "events": [{"slot": "card_last4", "value": "7310"}]},
        {
            "name": "unfreeze_card_form",
            "events": [{"active_loop": "unfreeze_card_form"}, {"active_loop": None}],
        },
        {"name": "action_unfreeze_card", "events": [{"paused": True}]},
    ]
    assert turn.slots == {"card_last4": "7310"}
    assert turn.active_loop is None
    assert turn.handed_off_by == "action_unfreeze_card"
    assert turn.detail() == {"actions": turn.actions, "slots": {"card_last4": "7310"}}
    assert BotTurn.from_dict(turn.as_dict()) == turn


def test_a_plain_answer_has_nothing_to_show_but_its_messages() -> None:
    done = tracker(UserUttered("hi"), ActionExecuted("utter_greet"), BotUttered("Hello"))
    turn = bot_turn(done, turn_start(done), [{"text": "Hello"}], [])
    assert turn == BotTurn(messages=[{"text": "Hello"}])
    assert turn.detail() is None


FAILURES_SCRIPT = """
import asyncio, json, socket
from rasa.core.actions.action import ActionExecutionRejection, RemoteAction
from rasa.core.channels.channel import CollectingOutputChannel
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import ClientResponseError, EndpointConfig
from handoff.assistant.bot_turns import install_failure_probe, recording_failures

class Rejecting(EndpointConfig):  # an action server that answers 400: "not this time"
    async def request(self, *args, **kwargs):
        body = json.dumps({"action_name": "action_unfreeze_card", "error": "not now"})
        raise ClientResponseError(400, "Bad Request", body)

async def run(endpoint):
    action = RemoteAction("action_unfreeze_card", endpoint)
    tracker = DialogueStateTracker.from_events("c1", [])
    try:
        await action.run(CollectingOutputChannel(), None, tracker, Domain.empty())
    except ActionExecutionRejection:
        return "rejected"
    except Exception:
        return "raised"
    return "ran"

async def main():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = EndpointConfig(f"http://127.0.0.1:{sock.getsockname()[1]}/webhook")
    install_failure_probe()
    install_failure_probe()  # idempotent: one wrapper
    result = {}
    with recording_failures() as failures:
        result["unreachable"] = await run(closed)
    result["unreachable_recorded"] = failures
    result["outside_a_recording"] = await run(closed)
    with recording_failures() as failures:
        result["rejected"] = await run(Rejecting("http://127.0.0.1:1/webhook"))
    result["rejected_recorded"] = failures
    print("RESULT " + json.dumps(result))

asyncio.run(main())
"""


def test_failing_custom_actions_are_recorded_and_rejections_are_not() -> None:
    result = run_rasa_script(FAILURES_SCRIPT)  # Rasa's actions import TensorFlow
    assert result["unreachable"] == "raised"  # Rasa's behaviour is unchanged
    assert [f["name"] for f in result["unreachable_recorded"]] == ["action_unfreeze_card"]
    assert "action_unfreeze_card" in result["unreachable_recorded"][0]["error"]
    assert result["outside_a_recording"] == "raised"
    assert (result["rejected"], result["rejected_recorded"]) == ("rejected", [])
