"""Which agents are connected and whether they take conversations (in-process)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = ["AgentPresence", "Presence"]

STATUSES = ("online", "away")


@dataclass(frozen=True)
class AgentPresence:
    agent_id: int
    display_name: str
    status: str
    connections: int


class Presence:
    def __init__(self) -> None:
        self._connections: Counter[int] = Counter()
        self._status: dict[int, str] = {}
        self._names: dict[int, str] = {}

    def connected(self, agent_id: int, display_name: str) -> None:
        self._connections[agent_id] += 1
        self._status.setdefault(agent_id, "online")
        self._names[agent_id] = display_name

    def disconnected(self, agent_id: int) -> None:
        self._connections[agent_id] -= 1
        if self._connections[agent_id] <= 0:
            del self._connections[agent_id]
            self._status.pop(agent_id, None)

    def set_status(self, agent_id: int, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if agent_id in self._connections:
            self._status[agent_id] = status

    def online_count(self) -> int:
        return sum(1 for status in self._status.values() if status == "online")

    def snapshot(self) -> list[AgentPresence]:
        return [
            AgentPresence(agent_id, self._names[agent_id], self._status[agent_id], count)
            for agent_id, count in sorted(self._connections.items())
        ]
