"""Agent accounts and sessions: Argon2id password hashes, opaque expiring session tokens.

A session token is 32 random bytes (URL-safe base64) handed to the browser as an HttpOnly
cookie; the database keeps only its SHA-256, so a leaked database does not leak sessions.

Argon2 (about 0.1 s of CPU per hash or check) never runs on the event loop: it runs on a
few threads of its own (:class:`PasswordThreads`), so a flood of sign-ins queues there
while chats go on. A sign-in costs one Argon2 check whether the username exists, is
disabled or not (unknown ones are checked against a dummy hash), so the answer's timing
does not tell which usernames exist; it is throttled per username and per client address
(:mod:`handoff.web.sign_in_throttle`), and every refusal is logged and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from handoff.core.errors import HandoffError
from handoff.storage.records import Agent
from handoff.storage.store import Store
from handoff.web.sign_in_throttle import SignInThrottle, Throttled, retry_after_header

__all__ = [
    "MIN_PASSWORD_CHARS",
    "REFUSAL_REASONS",
    "REFUSED_SIGN_INS",
    "ROLES",
    "SESSION_SECONDS",
    "AccountError",
    "AuthError",
    "PasswordThreads",
    "ServerBusy",
    "SignInRefused",
    "SignInThrottled",
    "create_agent",
    "hash_password",
    "session_agent",
    "sign_in",
    "sign_out",
    "token_hash",
    "validate_account",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

SESSION_SECONDS = 12 * 3600
"""A sign-in lasts one working day."""

ROLES = ("agent", "maintainer")
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
MIN_PASSWORD_CHARS = 10

PASSWORD_THREADS = 2
"""Threads that run Argon2. Each hash uses its 4 lanes in parallel, so two already keep two
cores busy: more would only take CPU from the event loop."""
MAX_WAITING_SIGN_INS = 32
"""Sign-ins waiting for a password check beyond which new ones are refused at once (busy,
HTTP 503): at about 0.1 s each on two threads, the last one waits under two seconds."""
BUSY_RETRY_SECONDS = 1
ARGON2_NICENESS = 10
"""CPU priority of the Argon2 threads (0 normal, 19 lowest): at 10, the loop's thread outweighs
eight of them (Linux's scheduler weights: 1024 at 0, 110 at 10)."""

_hasher = PasswordHasher()

REFUSED_SIGN_INS: Counter[str] = Counter()
"""Refused sign-ins of this process since it started, by reason (for ``/metrics``)."""
REFUSAL_REASONS = ("bad_credentials", "throttled", "busy")


class SignInRefused(HandoffError):
    """A sign-in was refused; the message is safe to show (it never says which part of the
    credentials was wrong). ``code`` (also ``reason``) is one of :data:`REFUSAL_REASONS`."""

    code = "bad_credentials"
    retry_after: float | None = None

    @property
    def reason(self) -> str:
        """The refusal's reason for ``/metrics`` and the log: its ``code``."""
        return self.code


class AuthError(SignInRefused):
    """Unknown username, wrong password or disabled account (the same answer for all)."""


class SignInThrottled(SignInRefused):
    """Too many failures for the username or the address: try again after ``retry_after``."""

    code = "throttled"

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "too many failed sign-ins for this username or from this address; "
            f"try again in {retry_after_header(retry_after)} seconds"
        )
        self.retry_after = retry_after


class ServerBusy(SignInRefused):
    """Too many sign-ins are waiting for a password check: try again in a second."""

    code = "busy"
    retry_after = float(BUSY_RETRY_SECONDS)

    def __init__(self) -> None:
        super().__init__("the server is checking too many sign-ins; try again in a second")


class AccountError(HandoffError, ValueError):
    """An account could not be created or changed; the message says why."""

    code = "invalid_account"


class PasswordThreads:
    """Argon2 off the event loop, on a fixed number of threads.

    :meth:`check` refuses at once (:class:`ServerBusy`) when ``max_waiting`` jobs are
    already queued or running, so that a flood of sign-ins holds bounded memory; hashing a
    new password (maintainers and the CLI only) always queues. Jobs are counted until their
    thread finishes them, even if the request that asked is gone.
    """

    def __init__(self, threads: int, max_waiting: int) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._max_waiting = max_waiting
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def full(self) -> bool:
        """True when a sign-in now would be refused as busy."""
        return self._pending >= self._max_waiting

    async def hash(self, password: str) -> str:
        return await self._run(_hasher.hash, password, limited=False)

    async def check(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; ``None`` (no such account) checks against a dummy
        hash and is False, at the same cost. Raises :class:`ServerBusy`."""
        return await self._run(_verify, password_hash, password, limited=True)

    async def _run(self, function: Callable[..., _T], *args: object, limited: bool) -> _T:
        with self._lock:
            if limited and self._pending >= self._max_waiting:
                raise ServerBusy()
            self._pending += 1
        job: Future[_T] = self._executor.submit(function, *args)
        job.add_done_callback(self._finished)
        return await asyncio.wrap_future(job)

    def _finished(self, _job: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1


def _lower_priority() -> None:
    """Make this thread, and the lane threads Argon2 starts from it (they inherit it), yield
    the CPU to the event loop's thread: a flood of sign-ins otherwise runs 2 x 4 Argon2
    threads against one loop thread, and measured here /health then waited up to 1 s with
    the loop free. Linux only (elsewhere the niceness is the whole process's)."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ARGON2_NICENESS)


@cache
def _dummy_hash() -> str:
    """A hash of a random password, made once with the current parameters."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        _matches(_dummy_hash(), password)
        return False
    return _matches(password_hash, password)


def _matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


passwords = PasswordThreads(PASSWORD_THREADS, MAX_WAITING_SIGN_INS)
"""The process's Argon2 threads."""


async def hash_password(password: str) -> str:
    """The Argon2id hash of ``password``, computed off the event loop."""
    return await passwords.hash(password)


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
    password_hash = await hash_password(password)
    return await store.add_agent(username, display_name.strip(), password_hash, role)


async def sign_in(
    store: Store, throttle: SignInThrottle, username: str, password: str, address: str
) -> tuple[str, Agent]:
    """Check the password of a sign-in from client ``address``; return a new session token
    and the agent. Raises a :class:`SignInRefused` (logged and counted): :class:`AuthError`,
    :class:`SignInThrottled` or :class:`ServerBusy`."""
    try:
        return await _sign_in(store, throttle, username, password, address)
    except SignInRefused as refused:
        REFUSED_SIGN_INS[refused.reason] += 1
        logger.warning(
            "Sign-in refused (%s): username %r from %s", refused.reason, username, address
        )
        raise


async def _sign_in(
    store: Store, throttle: SignInThrottle, username: str, password: str, address: str
) -> tuple[str, Agent]:
    if passwords.full:  # before counting an attempt that will not be checked
        raise ServerBusy()
    try:
        attempt = await throttle.attempt(username, address)
    except Throttled as throttled:
        raise SignInThrottled(throttled.retry_after) from None
    agent = await store.agent_by_username(username)
    try:
        matches = await passwords.check(agent.password_hash if agent else None, password)
    except ServerBusy:
        await throttle.withdraw(attempt)
        raise
    if agent is None or agent.disabled or not matches:
        raise AuthError("unknown username or wrong password")
    await throttle.succeeded(attempt)
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
