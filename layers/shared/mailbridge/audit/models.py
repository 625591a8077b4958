"""An audit entry, as stored and as shown (a page of history is in `.history_models`)."""

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from ..agents.models import Caller
from ..connections.records import Status
from ..core.types import Model


class Actor(Model):
    """Who made the change: a person of the organization or an agent's runtime (the token's
    subject), or the service itself (a use of the connection found it broken, a provider
    refused a shared app's secret)."""

    kind: Literal["person", "agent", "system"]
    subject: str = Field(description="The token's `sub`; `mailbridge` for the service.")

    @classmethod
    def of(cls, caller: Caller) -> "Actor":
        return cls(kind="agent" if caller.agent_id else "person", subject=caller.subject)


SERVICE = Actor.model_construct(kind="system", subject="mailbridge")


class AuditAction(StrEnum):
    CONNECTION_SAVED = "connection_saved"
    AUTHORIZED = "authorized"
    REAUTHORIZED = "reauthorized"
    TESTED = "tested"
    # A use of the connection (reading, sending, a look for new mail) found it broken, or
    # working again.
    STATUS_CHANGED = "status_changed"
    # A token refresh granted other scopes than the sign-in did (consent withdrawn since).
    GRANT_CHANGED = "grant_changed"
    DISCONNECTED = "disconnected"
    AGENT_REGISTERED = "agent_registered"  # or its name or client organization changed
    AGENT_REMOVED = "agent_removed"  # its connection disconnected with it
    SEND_REFUSED = "send_refused"  # by the policy: sent messages are mail, not changes
    SHARED_APP_SAVED = "shared_app_saved"
    SHARED_APP_SECRET_REFUSED = "shared_app_secret_refused"  # noqa: S105 (a name)
    SHARED_APP_REMOVED = "shared_app_removed"
    POLICY_SAVED = "policy_saved"
    POLICY_REMOVED = "policy_removed"


def time_key(at: datetime) -> str:
    """UTC at a fixed width: the string order is the time order (entries are sorted by it)."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class FieldChange(Model):
    """One field's change. A secret's value is never recorded: `secret` says it changed."""

    field: str = Field(description="Dotted path, like `imap.host`.")
    before: Any = None
    after: Any = None
    secret: bool = False


class AuditEntry(Model):
    entry_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    org_id: str
    actor: Actor
    action: AuditAction
    target: Literal["connection", "agent", "shared_app", "client_org_policy"]
    agent_id: str | None = None
    client_org_id: str | None = None
    provider: str | None = Field(default=None, description="A shared app's provider.")
    outcome: Literal["succeeded", "failed", "refused"] = Field(
        default="succeeded",
        description="failed: a test, a sign-in or a use of the connection failed, and the "
        "entry records the status it left; refused: refused by a policy or by the "
        "connection's account, nothing changed.",
    )
    status: Status | None = Field(default=None, description="The connection's status after.")
    code: str | None = Field(default=None, description="Why it failed or was refused.")
    message: str | None = None
    changes: list[FieldChange] = Field(default_factory=list)

    @property
    def sort_key(self) -> str:
        return f"{time_key(self.at)}#{self.entry_id}"

    def failed(self, code: str, message: str, *, refused: bool = False) -> "AuditEntry":
        """This entry, for an attempt that failed (recorded with what it changed, the
        status), or that was refused (by policy, or another account: nothing changed)."""
        outcome = "refused" if refused else "failed"
        return self.model_copy(update={"outcome": outcome, "code": code, "message": message})
