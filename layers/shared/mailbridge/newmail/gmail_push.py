"""Gmail's push: Pub/Sub delivers Gmail's notification that a watched address has news, and
each agent whose mailbox that is gets a look queued. The route is public, so the push's OIDC
token is verified before anything else is read; the notification itself says only the
address (its history id is not used: a look goes on from where the agent's feed left off).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Protocol

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ConfigDict, Field, ValidationError

from ..core.adapters import load_adapter
from ..core.errors import ErrorCode, MailbridgeError
from ..core.observability import metrics
from ..core.settings import settings
from ..core.types import Model
from .models import SyncReason, SyncRequest

if TYPE_CHECKING:
    from ..storage.protocols import FeedStore, SyncQueue

# A Google-signed token is about 1 KB; anything far longer is not one.
_MAX_TOKEN_CHARACTERS = 8192
# Gmail's notification is two fields: its base64 is far below this.
_MAX_DATA_CHARACTERS = 4096


class PushTokenVerifier(Protocol):
    """The port to Google's verification of a push's OIDC token (`adapters.google`)."""

    def verify_push_token(self, token: str, *, audience: str, service_account: str) -> bool:
        """Whether Google signed `token` for `audience`, for `service_account`; a
        ProviderError if Google's keys cannot be had."""
        ...


class GmailNotification(Model):
    """What Gmail publishes: the watched address and its history id now."""

    model_config = ConfigDict(extra="ignore")

    email_address: str = Field(alias="emailAddress", min_length=3, max_length=320, pattern="@")
    history_id: int = Field(alias="historyId", ge=1)


class _PubSubMessage(Model):
    model_config = ConfigDict(extra="ignore")

    data: str = Field(min_length=1, max_length=_MAX_DATA_CHARACTERS)


class _PushEnvelope(Model):
    """Pub/Sub's push request (`message.data` is the published bytes, in base64)."""

    model_config = ConfigDict(extra="ignore")

    message: _PubSubMessage
    subscription: str = Field(max_length=512)


def _unauthorized() -> MailbridgeError:
    # Counted: a deployment whose audience or service account is wrong refuses every push,
    # and its Gmail agents wait for the catch-up rounds; an alarm on this says so.
    metrics.add_metric(name="PushRefused", unit=MetricUnit.Count, value=1)
    return MailbridgeError(
        ErrorCode.PUSH_UNAUTHORIZED,
        "The push carries no token Google signed for this deployment's push subscription.",
    )


def _invalid() -> MailbridgeError:
    return MailbridgeError(
        ErrorCode.NOTIFICATION_INVALID, "The body is not a Pub/Sub push of a Gmail notification."
    )


def verify_push(authorization: str | None) -> None:
    """Refuses a push whose `Authorization` is not a bearer token Google signed for the
    deployment's push subscription (its audience and service account). Without those
    settings every push is refused: an empty audience would check none."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_CHARACTERS:
        raise _unauthorized()
    verifier: PushTokenVerifier = load_adapter("google")
    current = settings()
    if not verifier.verify_push_token(
        token,
        audience=current.gmail_push_audience,
        service_account=current.gmail_push_service_account,
    ):
        raise _unauthorized()


def read_notification(body: str | None) -> GmailNotification:
    """The Gmail notification a Pub/Sub push carries; NOTIFICATION_INVALID for anything else."""
    try:
        envelope = _PushEnvelope.model_validate_json(body or "")
        data = base64.b64decode(envelope.message.data, validate=True)
        return GmailNotification.model_validate(json.loads(data))
    except (ValidationError, binascii.Error, ValueError, RecursionError):
        raise _invalid() from None


def accept_gmail_push(
    feeds: FeedStore, queue: SyncQueue, authorization: str | None, body: str | None
) -> int:
    """A push from Pub/Sub: verified, then a look queued for each agent whose mailbox the
    notified address is (none: nothing to do, and the push is done with). How many."""
    verify_push(authorization)
    notification = read_notification(body)
    agent_ids = feeds.subscribers(notification.email_address.lower())
    if agent_ids:
        queue.send(
            [SyncRequest(agent_id=agent_id, reason=SyncReason.NOTIFIED) for agent_id in agent_ids]
        )
    return len(agent_ids)
