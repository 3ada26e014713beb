"""Our tables (next to Rasa's ``events`` tracker table), as SQLAlchemy Core metadata.

Alembic migrations in ``handoff/migrations`` create and change them; this module is what the
code queries. Keep both in step: ``tests/test_migrations.py`` compares them.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "agent_sessions",
    "agents",
    "approvals",
    "assignments",
    "candidates",
    "conversations",
    "events",
    "exports",
    "handoffs",
    "labels",
    "messages",
    "metadata",
    "model_versions",
    "sign_in_failures",
    "verifications",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(128), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # "agent" | "maintainer"
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
)

agent_sessions = sa.Table(
    "agent_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("agent_id", sa.Integer, sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),  # Rasa's sender id
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("agent_id", sa.Integer, sa.ForeignKey("agents.id"), nullable=True),
    sa.Column("handoff_id", sa.Integer, nullable=True),  # the open handoff, if any
    sa.Column("handoff_reason", sa.String(32), nullable=True),
    sa.Column("fallback_streak", sa.Integer, nullable=False, server_default="0"),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float, nullable=False),
)

handoffs = sa.Table(
    "handoffs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("conversation_id", sa.String(255), nullable=False, index=True),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("queued_at", sa.Float, nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=True),
    sa.Column("first_agent_reply_at", sa.Float, nullable=True),
    sa.Column("closed_at", sa.Float, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),  # "handed_back" | "closed"
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("handoff_id", sa.Integer, sa.ForeignKey("handoffs.id"), nullable=False, index=True),
    sa.Column("agent_id", sa.Integer, sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("assigned_at", sa.Float, nullable=False),
    sa.Column("released_at", sa.Float, nullable=True),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("conversation_id", sa.String(255), nullable=False, index=True),
    sa.Column("handoff_id", sa.Integer, nullable=True, index=True),
    sa.Column("sender", sa.String(8), nullable=False),  # "user" | "bot" | "agent"
    sa.Column("agent_id", sa.Integer, sa.ForeignKey("agents.id"), nullable=True),
    sa.Column("client_message_id", sa.String(64), nullable=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("intent_ranking", sa.JSON, nullable=True),
    sa.Column("response_name", sa.String(128), nullable=True),  # canned response used
    sa.Column("created_at", sa.Float, nullable=False),
    # On a user message the bot answered: what its actions did and the slots after it
    # (handoff.assistant.interface.BotTurn.detail), for agents.
    sa.Column("turn", sa.JSON, nullable=True),
    sa.UniqueConstraint(
        "conversation_id", "sender", "client_message_id", name="uq_messages_client_id"
    ),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id"), nullable=False, index=True),
    sa.Column("intent", sa.String(128), nullable=False),
    sa.Column("is_new_intent", sa.Boolean, nullable=False),
    sa.Column("agent_id", sa.Integer, sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

events = sa.Table(
    "events_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # the event id clients resume from
    sa.Column("audience", sa.String(8), nullable=False),  # "user" | "agents"
    sa.Column("conversation_id", sa.String(255), nullable=True, index=True),
    sa.Column("agent_id", sa.Integer, nullable=True),  # agents audience: one agent, or all
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# The learning loop ---------------------------------------------------------------------------

candidates = sa.Table(
    "candidates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "example" | "response" | "story"
    sa.Column("status", sa.String(16), nullable=False, index=True),
    # "pending" | "approved" | "rejected" | "exported" | "skipped"
    # | "holdout" (to go into the held-out test set) | "held_out" (in it)
    sa.Column("source", sa.String(16), nullable=False),
    # "label" | "verification" | "handoff" | "approval" | "correction" (held bot answers)
    sa.Column("intent", sa.String(128), nullable=True),  # examples and responses
    sa.Column("text", sa.Text, nullable=True),  # example text or response text
    sa.Column("turns", sa.JSON, nullable=True),  # stories: [[intent, response name], ...]
    sa.Column("new_intent", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("conversation_id", sa.String(255), nullable=True),
    sa.Column("message_id", sa.Integer, nullable=True, index=True),
    sa.Column("handoff_id", sa.Integer, nullable=True),
    sa.Column("model_intent", sa.String(128), nullable=True),  # the model's top intent
    sa.Column("model_confidence", sa.Float, nullable=True),
    sa.Column("proposed_by", sa.Integer, sa.ForeignKey("agents.id"), nullable=True),
    sa.Column("reviewed_by", sa.Integer, sa.ForeignKey("agents.id"), nullable=True),
    sa.Column("reviewed_at", sa.Float, nullable=True),
    sa.Column("note", sa.Text, nullable=True),  # why it was skipped or rejected
    sa.Column("export_id", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

verifications = sa.Table(
    "verifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id"), nullable=False, unique=True),
    sa.Column("conversation_id", sa.String(255), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("predicted_intent", sa.String(128), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),  # "uncertain" | "unhelpful"
    sa.Column("status", sa.String(16), nullable=False, index=True),
    # "pending" | "confirmed" | "corrected" | "dismissed"
    sa.Column("intent", sa.String(128), nullable=True),  # the verified intent
    sa.Column("verified_by", sa.Integer, sa.ForeignKey("agents.id"), nullable=True),
    sa.Column("verified_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("conversation_id", sa.String(255), nullable=False, index=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id"), nullable=False, unique=True),
    sa.Column("client_id", sa.String(64), nullable=False),  # the user message's client id
    sa.Column("draft", sa.JSON, nullable=False),  # the bot's messages, held
    sa.Column("predicted_intent", sa.String(128), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("agent_id", sa.Integer, sa.ForeignKey("agents.id"), nullable=False),  # asked
    sa.Column("status", sa.String(16), nullable=False, index=True),
    # "pending" | handoff.core.approvals.OUTCOMES
    sa.Column("decided_by", sa.Integer, sa.ForeignKey("agents.id"), nullable=True),
    sa.Column("intent", sa.String(128), nullable=True),  # corrected to / labelled with
    sa.Column("reply", sa.Text, nullable=True),  # the agent's text, when replaced
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deadline_at", sa.Float, nullable=False),
    sa.Column("settled_at", sa.Float, nullable=True),
)

exports = sa.Table(
    "exports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("files", sa.JSON, nullable=False),  # paths written, relative to the project
    sa.Column("written", sa.Integer, nullable=False),
    sa.Column("skipped", sa.Integer, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),  # archive file name
    sa.Column("training_hash", sa.String(64), nullable=False),
    sa.Column("trained_at", sa.Float, nullable=False),
    sa.Column("training_seconds", sa.Float, nullable=True),
    sa.Column("metrics", sa.JSON, nullable=True),
    sa.Column("metrics_key", sa.String(64), nullable=True),  # test set + threshold they hold for
    sa.Column("status", sa.String(16), nullable=False),
    # "candidate" | "live" | "retired" | "rejected"
    sa.Column("promoted_at", sa.Float, nullable=True),
    sa.Column("report", sa.String(512), nullable=True),  # comparison report (Markdown) path
    # who made it live: "handoff train" (it won the comparison) or a maintainer (a roll-back)
    sa.Column("promoted_by", sa.String(64), nullable=True),
)

# Sign-in throttling (handoff.web.sign_in_throttle) ------------------------------------------------

sign_in_failures = sa.Table(
    "sign_in_failures",
    metadata,
    sa.Column("key", sa.String(96), primary_key=True),  # "user:<username>" | "addr:<address>"
    sa.Column("failures", sa.Integer, nullable=False),  # in a row, this one's included
    sa.Column("last_failure_at", sa.Float, nullable=False),
    sa.Column("locked_until", sa.Float, nullable=False),  # 0 or a past time: not locked out
)
