"""The learning loop's tables on SQLite and PostgreSQL (skipped, with the reason, where there
is no PostgreSQL): candidates, verification, exports and the model registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from handoff.storage.learning_store import (
    Decision,
    LearningStore,
    NotFoundError,
    VerificationDecision,
)
from handoff.storage.migrate import upgrade
from handoff.storage.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'learning.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_candidates_verification_exports_and_registry(database_url: str) -> None:
    upgrade(database_url)
    store = await Store.open(database_url)
    learning = LearningStore(store.engine)
    try:
        agent = await store.add_agent("ana", "Ana", "x" * 20, "agent")
        await store.conversation("c1")
        user, _, _ = await store.add_message("c1", "user", "do you rent safe deposit boxes")
        ranking = [
            {"name": "nlu_fallback", "confidence": 0.7},
            {"name": "open_account", "confidence": 0.3},
        ]
        await store.set_intent_ranking(user.id, ranking)
        user = await store.message(user.id)  # type: ignore[assignment]
        assert user is not None

        first = await learning.label_message(user, "box_rental", True, agent.id)
        second = await learning.label_message(user, "safe_deposit_box", True, agent.id)
        assert second.id == first.id and second.intent == "safe_deposit_box"  # relabel: same
        assert (first.model_intent, first.model_confidence) == ("open_account", 0.3)
        labels = await learning.labels([user.id])
        assert labels[user.id].intent == "safe_deposit_box" and labels[user.id].new_intent

        rows = [{"kind": "story", "source": "handoff", "turns": [["a", "utter_a"]],
                 "conversation_id": "c1", "handoff_id": 5}]  # fmt: skip
        assert len(await learning.add_candidates(rows)) == 1
        assert await learning.add_candidates(rows) == []  # a retry adds nothing

        with pytest.raises(NotFoundError):
            await learning.decide(
                [Decision(first.id, "approve"), Decision(9999, "reject")], agent.id
            )
        assert [c.status for c in await learning.candidates(["pending"])] == ["pending", "pending"]
        decided = await learning.decide([Decision(first.id, "edit", text="safe box?")], agent.id)
        assert decided[0].status == "approved" and decided[0].text == "safe box?"

        export_id = await learning.record_export(["data/learned/nlu.yml"], [first.id], {})
        [exported] = await learning.candidates(["exported"])
        assert exported.export_id == export_id
        with pytest.raises(NotFoundError):
            await learning.decide([Decision(first.id, "reject")], agent.id)  # final

        bot_answered, _, _ = await store.add_message("c1", "user", "hello")
        greet_ranking = [{"name": "greet", "confidence": 0.65}, {"name": "bye", "confidence": 0.2}]
        await store.set_intent_ranking(bot_answered.id, greet_ranking)
        await learning.queue_verification(bot_answered, "greet", 0.65, "uncertain")
        await learning.queue_verification(bot_answered, "greet", 0.65, "unhelpful")
        [item] = await learning.verifications()
        assert item.reason == "unhelpful"
        assert item.intent_ranking == greet_ranking  # for the queue's order (margins)
        created = await learning.verify(
            [VerificationDecision(item.id, "correct", "thank_you")], agent.id, ["greet"]
        )
        assert len(created) == 1 and await learning.verifications() == []
        [corrected] = await learning.candidates(["pending"], ids=created)
        assert (corrected.intent, corrected.source, corrected.new_intent) == (
            "thank_you",
            "verification",
            True,
        )

        # Held out: decided, then written to the held-out set by an export (final, like
        # exported), and not counted as an exported training example.
        [held] = await learning.decide([Decision(corrected.id, "hold_out")], agent.id)
        assert held.status == "holdout"
        await learning.record_export(["tests/data/heldout_nlu.yml"], [], {}, [corrected.id])
        [in_heldout] = await learning.candidates(["held_out"], ids=[corrected.id])
        assert in_heldout.export_id is not None
        assert await learning.candidates(["exported"], ids=[corrected.id]) == []
        with pytest.raises(NotFoundError):
            await learning.decide([Decision(corrected.id, "approve")], agent.id)

        old = await learning.register_model("m-old.tar.gz", "a" * 64, 90.0)
        assert (await learning.register_model("m-old.tar.gz", "a" * 64, 1.0)).id == old.id
        await learning.set_model_outcome("m-old.tar.gz", "live", None)
        await learning.register_model("m-new.tar.gz", "b" * 64, 95.0)
        await learning.set_model_metrics("m-new.tar.gz", {"accuracy": 0.9}, "key")
        await learning.set_model_outcome("m-new.tar.gz", "live", "report.md")
        live = await learning.live_model()
        assert (
            live is not None and live.name == "m-new.tar.gz" and live.metrics == {"accuracy": 0.9}
        )
        assert {m.name: m.status for m in await learning.models()} == {
            "m-old.tar.gz": "retired",
            "m-new.tar.gz": "live",
        }
        rows_for_metrics = await learning.metrics_rows()
        assert len(rows_for_metrics["user_messages"]) == 2
    finally:
        await store.close()
