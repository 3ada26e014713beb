"""The relay-under-load benchmark's verdict on a step: every message checked by its token."""

from __future__ import annotations

from benchmarks.relay_load import Phase, phase_result

LIMIT_MS = 100.0


def delivered_step(messages: int = 200, latency_ms: float = 10.0) -> Phase:
    """A step where every message reached its agent and every reply its user, once."""
    phase = Phase(active=10)
    for number in range(messages):
        token = f"s1-c{number % 10}-m{number // 10}"
        phase.sent_at[token] = float(number)
        phase.sent_at["re:" + token] = float(number) + 0.01
        phase.agent_seen[token] = 1
        phase.user_seen["re:" + token] = 1
        phase.to_agent.append(latency_ms)
        phase.to_user.append(latency_ms)
    return phase


def test_a_step_delivered_exactly_once_within_the_limit_is_sustained() -> None:
    result = phase_result(delivered_step(), rate=1.0, limit_ms=LIMIT_MS)
    assert result["messages"] == 200
    assert (result["lost_to_agent"], result["lost_to_user"]) == (0, 0)
    assert (result["duplicated_to_agent"], result["duplicated_to_user"]) == (0, 0)
    assert result["sustained"]


def test_a_lost_message_or_reply_is_counted_and_fails_the_step() -> None:
    phase = delivered_step()
    phase.agent_seen["s1-c3-m4"] = 0  # never reached its agent
    del phase.user_seen["re:s1-c5-m0"]  # the agent's reply never reached the user
    result = phase_result(phase, rate=1.0, limit_ms=LIMIT_MS)
    assert (result["lost_to_agent"], result["lost_to_user"]) == (1, 1)
    assert not result["sustained"]


def test_a_duplicated_message_fails_the_step() -> None:
    phase = delivered_step()
    phase.agent_seen["s1-c0-m0"] = 2
    result = phase_result(phase, rate=1.0, limit_ms=LIMIT_MS)
    assert result["duplicated_to_agent"] == 1
    assert not result["sustained"]


def test_a_slow_tail_or_a_cut_off_step_is_not_sustained() -> None:
    slow = delivered_step()
    slow.to_user[:5] = [150.0] * 5  # 2.5 % of replies over the limit: p99 over it
    assert not phase_result(slow, rate=1.0, limit_ms=LIMIT_MS)["sustained"]
    cut = delivered_step()
    cut.cut_off = True
    result = phase_result(cut, rate=1.0, limit_ms=LIMIT_MS)
    assert result["cut_off_overloaded"] and not result["sustained"]
