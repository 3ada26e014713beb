"""What conversations teach, as they happen: uncertain or unhelpful bot answers go to the
verification queue, and a finished handoff leaves response and story candidates for review.
Neither may ever cost a user an answer or break a handoff: failures are logged."""

from __future__ import annotations

import logging
from typing import Any

from handoff.assistant.interface import AssistantHolder
from handoff.core.triggers import HandoffPolicy, top_intent
from handoff.learning.candidates import handoff_candidates
from handoff.storage.learning_store import LearningStore
from handoff.storage.records import Message
from handoff.storage.store import Store

__all__ = ["Teaching"]

logger = logging.getLogger(__name__)


class Teaching:
    """The learning loop's hooks in the conversation service."""

    def __init__(
        self,
        store: Store,
        learning: LearningStore,
        assistant: AssistantHolder,
        policy: HandoffPolicy,
        verification_band: float,
    ) -> None:
        """``verification_band``: bot answers whose confidence is below the handoff threshold
        plus this are queued for verification (0: none)."""
        self.store = store
        self.learning = learning
        self.assistant = assistant
        self.policy = policy
        self.verification_band = verification_band

    async def queue_if_uncertain(
        self, message: Message, parse_data: dict[str, Any], fallback_threshold: float | None
    ) -> None:
        """Queue a bot-answered message for verification when its confidence was only just
        above the handoff threshold (the FallbackClassifier's, or a stricter per-intent one)."""
        if self.verification_band <= 0:
            return
        intent, confidence = top_intent(parse_data)
        if intent is None:
            return
        threshold = max(fallback_threshold or 0.0, self.policy.intent_thresholds.get(intent, 0.0))
        if confidence < threshold + self.verification_band:
            try:
                await self.learning.queue_verification(message, intent, confidence, "uncertain")
            except Exception:  # the verification queue must never cost the user an answer
                logger.exception("Could not queue message %s for verification", message.id)

    async def feedback(self, conversation_id: str, in_reply_to: str) -> bool:
        """The user marked the bot's answer to their message ``in_reply_to`` (its client id)
        as unhelpful: queue that message for verification. False if there is no such message
        or it was not answered by the bot."""
        message = await self.store.user_message_by_client_id(conversation_id, in_reply_to)
        if message is None or not message.intent_ranking:
            return False
        intent, confidence = top_intent({"intent_ranking": message.intent_ranking})
        if intent is None:
            return False
        await self.learning.queue_verification(message, intent, confidence, "unhelpful")
        return True

    async def learn_from_handoff(self, conversation_id: str, handoff_id: int) -> None:
        """Record the finished handoff's response and story candidates for review."""
        try:
            messages = [
                m for m in await self.store.messages(conversation_id) if m.handoff_id == handoff_id
            ]
            labels = await self.learning.labels([m.id for m in messages if m.sender == "user"])
            assistant = self.assistant.current
            known = assistant.responses().keys() if assistant else ()
            rows = handoff_candidates(messages, labels, known)
            if rows:
                await self.learning.add_candidates(rows)
        except Exception:  # learning must never break the handoff itself
            logger.exception("Could not record what handoff %s teaches", handoff_id)
