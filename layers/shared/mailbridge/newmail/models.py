"""What the new-mail feed keeps: an agent's place in its mailbox (its feed), its push
subscription, and the request that has a worker look at one mailbox. The event it sends is
in `.events`."""

from datetime import datetime
from enum import StrEnum
from typing import Literal

from ..core.types import Model

EVENT_SOURCE = "mailbridge"
EVENT_DETAIL_TYPE = "Mail Received"


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
