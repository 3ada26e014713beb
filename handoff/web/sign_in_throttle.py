"""Sign-in throttling: exponential lock-outs per username and per client address.

Each sign-in counts as one failure for two keys, the username's and the client address's,
before its password is checked (so that parallel guesses cannot all slip in before the first
one is counted); a success takes it back. The first ``lockout_after - 1`` failures of a key
in a row cost nothing; the ``lockout_after``-th locks the key out for ``base_seconds``, and
each further one doubles that, up to ``max_seconds``. While a key is locked out, every
sign-in for it is refused before any password is checked, so a correct password does not get
in either; refused attempts are not counted. A success resets the username's counter but only
takes its own failure back from the address's (an account of one's own must not buy guesses
at others). A counter restarts after ``forget_after_seconds`` without attempts.

The counters live in the ``sign_in_failures`` table, so every server process on one database
shares them. Each key's row is locked (an upsert) before it is read and changed, in the same
order (username, then address) by every transaction, so concurrent attempts on several
processes are counted one after the other and never lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.core.errors import HandoffError
from handoff.settings import Settings
from handoff.storage import schema

__all__ = [
    "MAX_KEY_CHARS",
    "Attempt",
    "BackOff",
    "SignInLimits",
    "SignInThrottle",
    "Throttled",
    "address_key",
    "forget_stale_counters",
    "retry_after_header",
    "username_key",
]

logger = logging.getLogger(__name__)

_TABLE = schema.sign_in_failures
FORGET_INTERVAL_S = 600.0
"""How often a server deletes counters that have restarted anyway."""
MAX_KEY_CHARS: int = _TABLE.c.key.type.length
"""Longer keys, and keys of values that are not printable ASCII, are stored as a hash."""
_MAX_DOUBLINGS = 40
"""Bounds the exponent: 2**40 times any base is beyond any sensible cap."""

# Statements built once (as in storage.store): these run inline on the event loop with SQLite,
# and building and compiling them anew cost more than running them.
_KEY = _TABLE.c.key == sa.bindparam("b_key")
_SELECT_ROW = _TABLE.select().where(_KEY)
_UPDATE_ROW = (
    _TABLE.update()
    .where(_KEY)
    .values(
        failures=sa.bindparam("b_failures"),
        last_failure_at=sa.bindparam("b_now"),
        locked_until=sa.bindparam("b_locked_until"),
    )
)
_DELETE_ROW = _TABLE.delete().where(_KEY)
_TAKE_BACK = (
    _TABLE.update()
    .where(_KEY, _TABLE.c.failures > 0)
    .values(
        failures=_TABLE.c.failures - 1,
        # Undo the lock-out the attempt started, unless a later attempt moved it.
        locked_until=sa.case(
            (_TABLE.c.locked_until == sa.bindparam("b_ours"), sa.bindparam("b_previous")),
            else_=_TABLE.c.locked_until,
        ),
    )
)


def _lock_row_statement(insert: Any) -> Any:
    """An upsert whose no-op update on conflict takes the row lock until the commit."""
    return (
        insert(_TABLE)
        .values(
            key=sa.bindparam("b_key"),
            failures=0,
            last_failure_at=sa.bindparam("b_now"),
            locked_until=0.0,
        )
        .on_conflict_do_update(index_elements=[_TABLE.c.key], set_={"failures": _TABLE.c.failures})
    )


_LOCK_ROW = {
    "postgresql": _lock_row_statement(postgresql.insert),
    "sqlite": _lock_row_statement(sqlite.insert),
}


@dataclass(frozen=True)
class BackOff:
    """How long a key stays locked out after failures in a row."""

    lockout_after: int
    """The failure in a row that starts the lock-outs (5: four wrong passwords cost nothing)."""
    base_seconds: float
    max_seconds: float
    forget_after_seconds: float

    def lockout_seconds(self, failures: int) -> float:
        """The lock-out that the ``failures``-th failure in a row starts (0: none)."""
        if failures < self.lockout_after:
            return 0.0
        doublings = min(failures - self.lockout_after, _MAX_DOUBLINGS)
        return float(min(self.max_seconds, self.base_seconds * 2**doublings))


@dataclass(frozen=True)
class SignInLimits:
    username: BackOff
    address: BackOff

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInLimits:
        def back_off(lockout_after: int) -> BackOff:
            return BackOff(
                lockout_after,
                settings.sign_in_lockout_seconds,
                settings.sign_in_max_lockout_seconds,
                settings.sign_in_forget_seconds,
            )

        return cls(
            back_off(settings.sign_in_username_failures),
            back_off(settings.sign_in_address_failures),
        )


class Throttled(HandoffError):
    """The username or the address is locked out; nothing was checked or counted."""

    code = "throttled"

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"locked out for {retry_after:.1f} s more")
        self.retry_after = retry_after


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up, so that a client waiting that long is
    past the lock-out."""
    return str(max(1, math.ceil(seconds)))


def username_key(username: str) -> str:
    return _key("user", username)


def address_key(address: str) -> str:
    return _key("addr", address)


def _key(kind: str, value: str) -> str:
    key = f"{kind}:{value}"
    if len(key) <= MAX_KEY_CHARS and value.isascii() and value.isprintable():
        return key
    return f"{kind}#{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"


@dataclass(frozen=True)
class Attempt:
    """A sign-in counted as a failure until :meth:`SignInThrottle.succeeded` or
    :meth:`SignInThrottle.withdraw` takes it back."""

    keys: tuple[str, str]
    """The username's key, then the address's."""
    locked_until: tuple[float, float]
    """Each key's lock-out end after this attempt (a new one if this attempt started one)."""
    previous_locked_until: tuple[float, float]
    """Each key's lock-out end before this attempt, restored when it is taken back."""


class SignInThrottle:
    """The shared counters (see the module doc), over the Store's engine."""

    def __init__(self, engine: AsyncEngine, limits: SignInLimits) -> None:
        self.engine = engine
        self.limits = limits

    async def attempt(self, username: str, address: str, now: float | None = None) -> Attempt:
        """Count a sign-in as a failure of both keys. Raises :class:`Throttled` (counting
        nothing) while either key is locked out."""
        now = time.time() if now is None else now
        keys = (username_key(username), address_key(address))
        back_offs = (self.limits.username, self.limits.address)
        async with self.engine.begin() as db:
            rows = [await self._lock_row(db, key, now) for key in keys]
            locked = max(row.locked_until for row in rows) - now
            if locked > 0:
                raise Throttled(locked)
            after = []
            for key, row, back_off in zip(keys, rows, back_offs, strict=True):
                forgotten = row.last_failure_at < now - back_off.forget_after_seconds
                failures = 1 if forgotten else row.failures + 1
                lockout = back_off.lockout_seconds(failures)
                locked_until = now + lockout if lockout else row.locked_until
                await db.execute(
                    _UPDATE_ROW,
                    {
                        "b_key": key,
                        "b_failures": failures,
                        "b_now": now,
                        "b_locked_until": locked_until,
                    },
                )
                after.append(locked_until)
        return Attempt(keys, (after[0], after[1]), (rows[0].locked_until, rows[1].locked_until))

    async def succeeded(self, attempt: Attempt) -> None:
        """The password was right: reset the username's counter, take the attempt back from
        the address's."""
        async with self.engine.begin() as db:
            await db.execute(_DELETE_ROW, {"b_key": attempt.keys[0]})
            await self._take_back(db, attempt, 1)

    async def withdraw(self, attempt: Attempt) -> None:
        """No password was checked (the server was busy): take the attempt back from both."""
        async with self.engine.begin() as db:
            for index in (0, 1):
                await self._take_back(db, attempt, index)

    async def forget_stale(self, now: float | None = None) -> int:
        """Delete the counters with no attempt for ``forget_after_seconds`` and no lock-out
        (they would restart anyway); return how many. Without this, every username an
        attacker tried would keep a row."""
        now = time.time() if now is None else now
        quiet = max(
            self.limits.username.forget_after_seconds, self.limits.address.forget_after_seconds
        )
        async with self.engine.begin() as db:
            result = await db.execute(
                _TABLE.delete().where(
                    _TABLE.c.last_failure_at < now - quiet, _TABLE.c.locked_until <= now
                )
            )
        return int(result.rowcount)

    async def _lock_row(self, db: Any, key: str, now: float) -> Any:
        await db.execute(_LOCK_ROW[self.engine.dialect.name], {"b_key": key, "b_now": now})
        return (await db.execute(_SELECT_ROW, {"b_key": key})).one()

    async def _take_back(self, db: Any, attempt: Attempt, index: int) -> None:
        await db.execute(
            _TAKE_BACK,
            {
                "b_key": attempt.keys[index],
                "b_ours": attempt.locked_until[index],
                "b_previous": attempt.previous_locked_until[index],
            },
        )


async def forget_stale_counters(engine: AsyncEngine, settings: Settings) -> None:
    """Run :meth:`SignInThrottle.forget_stale` every :data:`FORGET_INTERVAL_S` (a server's
    background task; several processes doing it is harmless)."""
    throttle = SignInThrottle(engine, SignInLimits.from_settings(settings))
    while True:
        try:
            deleted = await throttle.forget_stale()
            if deleted:
                logger.info("Deleted %d stale sign-in failure counters", deleted)
        except Exception:
            logger.exception("Could not delete stale sign-in failure counters")
        await asyncio.sleep(FORGET_INTERVAL_S)
