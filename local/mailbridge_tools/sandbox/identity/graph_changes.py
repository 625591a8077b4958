"""The fake Microsoft's side of Graph's change notifications, as Graph does it: the
validation request it sends to a subscription's notification URLs before creating it (the
endpoint must answer 200, text/plain, with the exact token, within 10 seconds), and the
notifications it posts (change notifications, lifecycle notifications), each recorded as a
`Delivery` for tests to look at.

Graph delivers asynchronously and retries failures for hours; the fake posts at once, in
the thread that caused it (a test's delivery of a message, its lifecycle hook), and never
retries, so a test sees each answer as it happens."""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

from .base import Account

# How long Graph waits for the answer to a validation request or a notification.
ANSWER_SECONDS = 10.0
# The longest a subscription on Outlook messages may live, in minutes.
MAX_SUBSCRIPTION_MINUTES = 4230
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})


@dataclass
class GraphSubscription:
    id: str
    account: Account
    resource: str
    folder: str | None  # a well-known folder's name; None: all the mailbox's messages
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    expires_at: datetime.datetime
    client_state: str | None
    immutable_ids: bool  # created with Prefer: IdType="ImmutableId": notifications use them
    application_id: str | None = None

    @property
    def expired(self) -> bool:
        return self.expires_at <= datetime.datetime.now(datetime.UTC)

    def resource_json(self) -> dict[str, Any]:
        """The subscription as Graph answers it."""
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": ",".join(sorted(self.change_types)),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            # Graph's own format: seven fractional digits.
            "expirationDateTime": self.expires_at.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
            "creatorId": self.account.subject,
            "latestSupportedTlsVersion": "v1_2",
        }


@dataclass(frozen=True)
class Delivery:
    """A request the fake sent to a notification URL, and the answer it got (status 0: none
    within the time Graph waits)."""

    kind: str  # "validation", a change type, or a lifecycle event
    url: str
    subscription_id: str | None
    status: int
    content_type: str
    body: str
    seconds: float
    sent: dict[str, Any] | None = None  # the notification collection posted


def endpoint_allowed(url: str) -> bool:
    """Graph posts to https URLs only. The local run serves plain http on loopback, which
    the fake accepts too (nothing else)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return parts.hostname == "localhost"


def validate(url: str) -> tuple[Delivery, bool]:
    """Graph's validation request to a notification URL, and whether it was answered
    right: 200, text/plain, the exact token, in time."""
    token = (
        "Validation: Testing client application reachability for subscription Request-Id: "
        f"{uuid.uuid4()} {secrets.token_urlsafe(8)}"
    )
    separator = "&" if urlsplit(url).query else "?"
    delivery = _post(
        f"{url}{separator}validationToken={quote(token, safe='')}",
        b"",
        "text/plain; charset=utf-8",
        kind="validation",
        subscription_id=None,
    )
    answered = (
        delivery.status == 200
        and delivery.content_type.split(";")[0].strip().lower() == "text/plain"
        and delivery.body == token
        and delivery.seconds <= ANSWER_SECONDS
    )
    return delivery, answered


def notify(
    url: str, notifications: list[dict[str, Any]], *, kind: str, subscription_id: str
) -> Delivery:
    """Posts a collection of notifications, as Graph does."""
    collection = {"value": notifications}
    delivery = _post(
        url,
        json.dumps(collection).encode(),
        "application/json; charset=utf-8",
        kind=kind,
        subscription_id=subscription_id,
    )
    return replace(delivery, sent=collection)


def _post(
    url: str, body: bytes, content_type: str, *, kind: str, subscription_id: str | None
) -> Delivery:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    started = time.monotonic()
    status, answer_type, text = 0, "", ""
    try:
        with urllib.request.urlopen(request, timeout=ANSWER_SECONDS) as response:
            status, answer_type = response.status, response.headers.get("Content-Type", "")
            text = response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        status, answer_type = error.code, error.headers.get("Content-Type", "")
        text = error.read().decode(errors="replace")
    except (OSError, ValueError):
        pass  # no answer: refused, timed out, or not HTTP
    return Delivery(
        kind, url, subscription_id, status, answer_type, text, time.monotonic() - started
    )
