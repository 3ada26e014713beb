"""The one error root of the project: every error we raise on purpose is a :class:`HandoffError`.

A ``HandoffError`` has a stable ``code`` (snake_case: clients and scripts may branch on it;
``docs/protocol.md`` lists the ones clients see) and a ``message`` for people: what happened
and, where there is one, what to do. Messages never name a class of ours. The web layer turns
any of them into an HTTP error body (:func:`handoff.web.http_errors.http_error`) or a websocket
``error`` frame (:func:`handoff.core.protocol.error_frame`), each in that one place.

The class tree (builtin bases in brackets, ``code`` after the colon; "per instance": the
raiser chooses the code)::

    HandoffError                      handoff_error
     ├── InternalError                : internal            (core.errors)
     ├── ProtocolError [ValueError]   : per instance        (core.safe_json)
     ├── IllegalTransition            : illegal_transition  (core.routing)
     │    └── NotAssignedToAgent      : not_assigned
     ├── ConcurrentUpdate             : concurrent_update   (storage.store)
     ├── NotFoundError [LookupError]  : not_found           (storage.learning_store)
     ├── LockTimeout [RuntimeError]   : conversation_busy   (realtime.locks)
     ├── AssistantNotReadyError [RuntimeError] : not_ready  (assistant.interface)
     ├── ModelNotFoundError [FileNotFoundError] : model_not_found (assistant.model_files)
     ├── FrameError [ValueError]      : internal            (assistant.worker_protocol)
     ├── WorkerGoneError [ConnectionError] : internal      (assistant.worker_client)
     ├── WorkerStartError [RuntimeError] : not_ready       (assistant.worker_client)
     ├── AssistantWorkerError [RuntimeError] : internal    (assistant.worker_client)
     ├── EndpointsError [ValueError]  : invalid_endpoints   (assistant.endpoints)
     ├── DecisionError [ValueError]   : invalid_field       (learning.review)
     ├── ExportError [RuntimeError]   : invalid_export      (learning.loop)
     ├── ActionError                  : per instance        (conversations.service)
     ├── SignInRefused                : bad_credentials     (web.auth)
     │    ├── AuthError               : bad_credentials
     │    ├── SignInThrottled         : throttled
     │    └── ServerBusy              : busy
     ├── AccountError [ValueError]    : invalid_account     (web.auth)
     ├── Throttled                    : throttled           (web.sign_in_throttle)
     ├── CommandError                 : command_failed      (cli.learning)
     └── SettingsError [ValueError]   : invalid_setting     (settings)
"""

from __future__ import annotations

__all__ = ["HandoffError", "InternalError"]


class HandoffError(Exception):
    """Base of every error the project raises on purpose.

    ``code`` is the class default unless the raiser passes ``code=``; ``message`` is
    ``str(error)``, written for the person who will read it.
    """

    code: str = "handoff_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """What happened, for people (the text clients show)."""
        return str(self)


class InternalError(HandoffError):
    """The server failed on a request through no fault of the client (it is logged)."""

    code = "internal"
