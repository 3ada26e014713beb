"""Custom actions of the Larkspur Bank assistant, served by the rasa-sdk action server.

Run from ``bot/`` as ``python -m rasa_sdk --actions actions``: the server imports this package
and registers every :class:`rasa_sdk.Action` subclass it finds, so each is imported here. The
package uses relative imports only, so it imports both as ``actions`` (from ``bot/``) and as
``bot.actions`` (from the repository root, e.g. in unit tests).
"""

from .actions import (
    ActionFreezeCard,
    ActionResetTransfer,
    ActionUnfreezeCard,
    ValidateLostCardForm,
    ValidateUnfreezeCardForm,
)

__all__ = [
    "ActionFreezeCard",
    "ActionResetTransfer",
    "ActionUnfreezeCard",
    "ValidateLostCardForm",
    "ValidateUnfreezeCardForm",
]
