"""What the user is told at each step of a handoff: the ``text`` of ``handoff`` events."""

from __future__ import annotations

__all__ = ["FAILED_ACTION_APOLOGY", "NOTICES", "notice"]

NOTICES = {
    "queued": "I'm handing you over to a member of our support team. Please stay here.",
    "no_agents": (
        "No one from our team is online right now. Leave your message here and the next "
        "available person will answer it."
    ),
    "agent_joined": "{agent} joined the chat.",
    "handed_back": "{agent} handed you back to the virtual assistant.",
    "closed": "{agent} closed the conversation. Thank you for getting in touch.",
}
"""Notice wording by handoff status; ``{agent}`` is the agent's display name."""

FAILED_ACTION_APOLOGY = "Sorry, something went wrong on our side and I couldn't finish that."
"""Said before the ``queued`` notice when the handoff is because a custom action failed."""


def notice(status: str, agent: str = "", reason: str | None = None) -> str:
    """The text the user reads for handoff ``status`` (a key of :data:`NOTICES`); a queue
    because an action failed (``reason`` ``action_failed``) starts with an apology."""
    text = NOTICES[status].format(agent=agent)
    if status == "queued" and reason == "action_failed":
        return f"{FAILED_ACTION_APOLOGY} {text}"
    return text
