"""What the user is told at each step of a handoff: the ``text`` of ``handoff`` events."""

from __future__ import annotations

__all__ = ["NOTICES", "notice"]

NOTICES = {
    "queued": "I'm handing you over to a member of our support team. Please stay here.",
    "no_agents": (
        "No one from our team is online right now. Leave your message here and the next "
        "available person will answer it."
    ),
    "agent_joined": "{agent} joined the chat.",
    "handed_back": "{agent} handed you back to the virtual assistant.",
    "closed": "{agent} closed the conversation. Thank you for contacting Larkspur Bank.",
}
"""Notice wording by handoff status; ``{agent}`` is the agent's display name."""


def notice(status: str, agent: str = "") -> str:
    """The text the user reads for handoff ``status`` (a key of :data:`NOTICES`)."""
    return NOTICES[status].format(agent=agent)
