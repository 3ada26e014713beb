"""Agent accounts and sessions: Argon2id password hashes, opaque expiring session tokens.

A session token is 32 random bytes (URL-safe base64) handed to the browser as an HttpOnly
cookie; the database keeps only its SHA-256, so a leaked database does not leak sessions.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from handoff.store import Agent, Store

SESSION_SECONDS = 12 * 3600
"""A sign-in lasts one working day."""

ROLES = ("agent", "maintainer")
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
MIN_PASSWORD_CHARS = 10

_hasher = PasswordHasher()


class AuthError(Exception):
    """Sign-in refused; the message is safe to show (it never says which part was wrong)."""


class AccountError(ValueError):
    """An account could not be created or changed; the message says why."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_account(username: str, display_name: str, password: str, role: str) -> None:
    if not USERNAME_PATTERN.match(username):
        raise AccountError(
            "username must be 2-64 characters: lower-case letters, digits, '_', '.', '-'"
        )
    if not display_name.strip() or len(display_name) > 128:
        raise AccountError("display name must be 1-128 characters")
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")


async def create_agent(
    store: Store, username: str, display_name: str, password: str, role: str = "agent"
) -> Agent:
    """Validate and store a new account. Raises AccountError (e.g. the username is taken)."""
    validate_account(username, display_name, password, role)
    if await store.agent_by_username(username):
        raise AccountError(f"username {username!r} is taken")
    return await store.add_agent(username, display_name.strip(), hash_password(password), role)


async def sign_in(store: Store, username: str, password: str) -> tuple[str, Agent]:
    """Check the password; return a new session token and the agent. Raises AuthError."""
    agent = await store.agent_by_username(username)
    if agent is None or agent.disabled or not check_password(agent.password_hash, password):
        raise AuthError("unknown username or wrong password")
    token = secrets.token_urlsafe(32)
    await store.add_session(token_hash(token), agent.id, time.time() + SESSION_SECONDS)
    return token, agent


async def session_agent(store: Store, token: str | None) -> Agent | None:
    """The signed-in agent of a session token, or None if absent, unknown or expired."""
    if not token:
        return None
    return await store.session_agent(token_hash(token), time.time())


async def sign_out(store: Store, token: str) -> None:
    await store.delete_session(token_hash(token))
