"""What the new-mail feed keeps and sends: the event per message, an agent's place in its
mailbox (its feed), and the request that has a worker look at one mailbox."""

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from ..core.types import Model
from ..mail.models import Address, MessageSummary

EVENT_SOURCE = "mailbridge"
EVENT_DETAIL_TYPE = "Mail Received"


class MailReceived(Model):
    """The event's detail: one new message of one agent's inbox."""

    event_id: str = Field(
        description="The same for every delivery of this message to this agent: EventBridge "
        "delivers at least once, so a consumer that must never act twice keeps it."
    )
    agent_id: str
    org_id: str
    client_org_id: str | None
    message_id: str = Field(description="The mail API's id: read or reply with it.")
    thread_id: str
    sender: Address | None = Field(description="The From address.")
    subject: str
    received_at: datetime

    @classmethod
    def of(
        cls, agent_id: str, org_id: str, client_org_id: str | None, message: MessageSummary
    ) -> "MailReceived":
        digest = hashlib.sha256(f"{agent_id}\x1f{message.id}".encode()).hexdigest()
        return cls(
            event_id=digest[:32],
            agent_id=agent_id,
            org_id=org_id,
            client_org_id=client_org_id,
            message_id=message.id,
            thread_id=message.thread_id,
            sender=message.sender,
            subject=message.subject,
            received_at=message.received_at,
        )


class SyncReason(StrEnum):
    POLL = "poll"  # a scheduler's round
    NOTIFIED = "notified"  # the provider pushed news of this mailbox
    RENEW = "renew"  # the provider asked for its subscription to be renewed (or remade)
    CONNECTED = "connected"  # a sign-in connected (or re-connected) it


class Round(Model):
    """A scheduler's round, as its schedule's input names it: whose mailboxes."""

    provider: Literal["imap", "google", "microsoft"]


class SyncRequest(Model):
    """One SQS message: look at this agent's mailbox."""

    agent_id: str
    reason: SyncReason


class Subscription(Model):
    """A push provider's news of the inbox: Gmail's watch (its id, the watched address) or
    Graph's subscription (its id). Notifications name it, and find their agents by it."""

    id: str
    expires_at: datetime
    renewed_at: datetime
    # Graph's clientState, hashed: the secret stays with Graph, and a notification must
    # carry what hashes to this.
    client_state_sha256: str | None = None


class Feed(Model):
    """One agent's place in its inbox: what its provider needs to tell what is new since
    (`position`, the adapter's own string), for the connection made at `based_on`."""

    agent_id: str
    based_on: datetime  # the connection's `connected_at`: a new connection starts afresh
    position: str | None = None  # None: nothing looked at yet
    subscription: Subscription | None = None
    version: int = 0  # 0: not stored yet
