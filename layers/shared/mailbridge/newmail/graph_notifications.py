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
from itertools import islice
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, ValidationError

from ..core.errors import ErrorCode, MailbridgeError
from ..core.fields import GUID_PATTERN
from ..core.observability import logger
from ..core.types import Model
from .models import Feed, SyncReason, SyncRequest

if TYPE_CHECKING:
    from ..storage.protocols import FeedStore, SyncQueue

# Graph's validation tokens are a sentence and a GUID; anything far longer is not one.
MAX_TOKEN_CHARACTERS = 1024
# Graph batches notifications, and documents no most per request: this many is a parsing
# bound (the body's size is another), not what Graph is known to send.
MAX_NOTIFICATIONS = 1000
# What one request may cost: this many subscriptions looked up (two reads each for Graph's:
# its agent, then the agent's feed). Graph gives up after 3 seconds and throttles an
# endpoint that often takes 2.9; this many stays far below. The notifications of further
# subscriptions are dropped, and logged: the catch-up round finds their mail.
MAX_SUBSCRIPTIONS = 100
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
    # Each subscription is looked up once, however many notifications (or clientState
    # guesses) name it.
    named = _by_subscription(notifications)
    if len(named) > MAX_SUBSCRIPTIONS:
        logger.warning(
            "graph notifications dropped: too many subscriptions in one request",
            extra={"subscriptions": len(named) - MAX_SUBSCRIPTIONS},
        )
    reasons: dict[str, SyncReason] = {}
    for subscription_id, carried in islice(named.items(), MAX_SUBSCRIPTIONS):
        for agent_id, reason in _believed(feeds, subscription_id, carried):
            # A renewal looks too: one look per agent, the renewal if any asked for it.
            if reasons.get(agent_id) is not SyncReason.RENEW:
                reasons[agent_id] = reason
    if reasons:
        queue.send([SyncRequest(agent_id=agent, reason=why) for agent, why in reasons.items()])
    return len(reasons)


def _by_subscription(
    notifications: list[GraphNotification],
) -> dict[str, list[tuple[str, SyncReason]]]:
    """What each subscription's notifications carry: the hash of their clientState, and the
    reason of each. Graph's subscription ids are GUIDs and each of ours has a clientState: a
    notification without both names none of ours, and is dropped before any lookup (logged
    without its text: a stranger's)."""
    named: dict[str, list[tuple[str, SyncReason]]] = {}
    for notification in notifications:
        client_state, subscription_id = notification.client_state, notification.subscription_id
        if client_state is not None and re.fullmatch(GUID_PATTERN, subscription_id):
            carried = hashlib.sha256(client_state.encode()).hexdigest()
            named.setdefault(subscription_id, []).append((carried, notification.reason))
    unnamed = len(notifications) - sum(map(len, named.values()))
    if unnamed:
        logger.warning(
            "graph notifications dropped: not a subscription id, or no clientState",
            extra={"notifications": unnamed},
        )
    return named


def _believed(
    feeds: FeedStore, subscription_id: str, carried: list[tuple[str, SyncReason]]
) -> list[tuple[str, SyncReason]]:
    """The subscription's agents, each with the reason of every notification (`carried`:
    the hash of its clientState, and its reason) that carries the clientState of that
    agent's subscription."""
    agents = feeds.subscribers(subscription_id)
    if not agents:
        # Stopped (a disconnect), or replaced: it lapses by itself.
        logger.info("graph notification for no agent", extra={"subscription_id": subscription_id})
        return []
    secrets = [
        (agent_id, _client_state_sha256(feeds.get(agent_id), subscription_id))
        for agent_id in agents
    ]
    believed: list[tuple[str, SyncReason]] = []
    dropped = 0
    for client_state, reason in carried:
        matched = [
            agent_id
            for agent_id, secret in secrets
            if secret is not None and hmac.compare_digest(client_state, secret)
        ]
        believed += [(agent_id, reason) for agent_id in matched]
        dropped += not matched
    if dropped:
        logger.warning(
            "graph notification dropped: clientState does not match",
            extra={"subscription_id": subscription_id, "notifications": dropped},
        )
    return believed


def _client_state_sha256(feed: Feed | None, subscription_id: str) -> str | None:
    """The hash of the clientState the agent's subscription was given, if the subscription
    is still the one named."""
    subscription = feed.subscription if feed is not None else None
    if subscription is None or subscription.id != subscription_id:
        return None
    return subscription.client_state_sha256
