"""Microsoft Graph's change notifications: Graph posts to the public route when a message is
created in a subscribed inbox (and lifecycle notifications about the subscription itself), and
each agent the subscription is for gets a look queued. The notification says which
subscription, never what arrived: the look's delta query finds that.

The route is public, so a notification is believed only if it carries the subscription's
`clientState`, the secret given to Graph when subscribing, of which the agent's feed keeps the
hash. Graph's validation request, sent while it subscribes, is answered with its token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, ValidationError

from ..core.errors import ErrorCode, MailbridgeError
from ..core.fields import GUID_PATTERN
from ..core.observability import logger
from ..core.types import Model
from .models import Feed, SyncReason, SyncRequest

if TYPE_CHECKING:
    from ..storage.protocols import FeedStore, SyncQueue

# Graph's subscription ids are GUIDs: anything else names none of ours, and is dropped
# before any lookup (and never logged: it is a stranger's text).
# Graph's validation tokens are a sentence and a GUID; anything far longer is not one.
MAX_TOKEN_CHARACTERS = 1024
# Graph batches notifications; this many in one request is far more than it sends.
MAX_NOTIFICATIONS = 1000
# What each lifecycle notification asks for: renewing the subscription (reauthorizing it, or
# making a new one when Graph removed it: subscribe() does whichever works), or a look (a
# `missed` one: the delta query finds whatever the lost notifications were about). A change
# notification, or a lifecycle event Graph adds later, asks for a look.
_LIFECYCLE_REASONS = {
    "reauthorizationRequired": SyncReason.RENEW,
    "subscriptionRemoved": SyncReason.RENEW,
    "missed": SyncReason.NOTIFIED,
}


class GraphNotification(Model):
    """A change or lifecycle notification: what of it is read (Graph sends more)."""

    model_config = ConfigDict(extra="ignore")

    subscription_id: str = Field(alias="subscriptionId", min_length=1, max_length=128)
    client_state: str | None = Field(default=None, alias="clientState", max_length=255)
    lifecycle_event: str | None = Field(default=None, alias="lifecycleEvent", max_length=64)

    @property
    def reason(self) -> SyncReason:
        return _LIFECYCLE_REASONS.get(self.lifecycle_event or "", SyncReason.NOTIFIED)


class _Notifications(Model):
    """Graph's changeNotificationCollection."""

    model_config = ConfigDict(extra="ignore")

    value: list[GraphNotification] = Field(min_length=1, max_length=MAX_NOTIFICATIONS)


def _invalid(message: str) -> MailbridgeError:
    return MailbridgeError(ErrorCode.NOTIFICATION_INVALID, message)


def validation_answer(token: str, body: str) -> str:
    """What Graph's validation request must get back: its token (already decoded from the
    query string, once), as sent."""
    if body:
        raise _invalid("A validation request has no body.")
    if not token or len(token) > MAX_TOKEN_CHARACTERS:
        raise _invalid(f"validationToken must be 1 to {MAX_TOKEN_CHARACTERS} characters.")
    return token


def accept_graph_notifications(feeds: FeedStore, queue: SyncQueue, body: str) -> int:
    """Queues a look for each agent a notification in `body` is for, once per agent, and
    only where the notification carries the clientState of that agent's subscription (the
    others are dropped, and logged without it). How many looks were queued."""
    try:
        notifications = _Notifications.model_validate_json(body).value
    except ValidationError:
        raise _invalid("The body is not a collection of Graph's notifications.") from None
    reasons: dict[str, SyncReason] = {}
    checked: dict[tuple[str, str | None], list[str]] = {}
    for notification in notifications:
        key = (notification.subscription_id, notification.client_state)
        if key not in checked:
            checked[key] = _agents_of(feeds, notification)
        for agent_id in checked[key]:
            # A renewal looks too: one look per agent, the renewal if any asked for it.
            if reasons.get(agent_id) is not SyncReason.RENEW:
                reasons[agent_id] = notification.reason
    if reasons:
        queue.send([SyncRequest(agent_id=agent, reason=why) for agent, why in reasons.items()])
    return len(reasons)


def _agents_of(feeds: FeedStore, notification: GraphNotification) -> list[str]:
    """The agents whose subscription the notification names and whose clientState it
    carries."""
    subscription_id = notification.subscription_id
    if re.fullmatch(GUID_PATTERN, subscription_id) is None:
        logger.warning("graph notification dropped: not a subscription id")
        return []
    agents = feeds.subscribers(subscription_id)
    if not agents:
        # Stopped (a disconnect), or replaced: it lapses by itself.
        logger.info("graph notification for no agent", extra={"subscription_id": subscription_id})
        return []
    believed = [
        agent_id for agent_id in agents if _carries_client_state(feeds.get(agent_id), notification)
    ]
    if len(believed) < len(agents):
        logger.warning(
            "graph notification dropped: clientState does not match",
            extra={"subscription_id": subscription_id, "agents": len(agents) - len(believed)},
        )
    return believed


def _carries_client_state(feed: Feed | None, notification: GraphNotification) -> bool:
    subscription = feed.subscription if feed is not None else None
    if (
        subscription is None
        or subscription.id != notification.subscription_id
        or subscription.client_state_sha256 is None
        or notification.client_state is None
    ):
        return False
    carried = hashlib.sha256(notification.client_state.encode()).hexdigest()
    return hmac.compare_digest(carried, subscription.client_state_sha256)
