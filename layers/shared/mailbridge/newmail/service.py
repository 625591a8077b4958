"""New mail becomes one event per message: the scheduler's round queues the connected
mailboxes, a worker looks at one mailbox from where its feed left off and announces what is
new, each message once.

At least once in, exactly once out: a look may be repeated (an SQS redelivery, a push and a
poll of the same mailbox, a worker that died before moving the feed), so each message is
claimed before it is announced and noted once it was, and the feed moves only after. The
only duplicate left is a worker dying between EventBridge taking the event and the note,
which the event's `event_id` lets a consumer see.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from ..agents.models import Agent
from ..connections.records import Degraded, Problem, Status, StoredConfig
from ..core.errors import MailbridgeError, MailServerError, ProviderError
from ..core.observability import logger
from ..mail.mailboxes import Mailbox
from ..mail.models import MessageSummary
from ..mail.service import BREAKS_THE_CONNECTION, Stores, agent_mailbox
from .events import MailReceived
from .models import Feed, Round, Subscription, SyncReason, SyncRequest

if TYPE_CHECKING:
    from ..storage.protocols import (
        AgentStore,
        EventBus,
        FeedStore,
        OrgStore,
        SecretStore,
        SyncQueue,
    )

# Messages one look announces; more are left for the next look, queued at once.
LOOK_LIMIT = 50
# How long a claimed announcement is another worker's: far longer than one publish takes.
CLAIM_SECONDS = 60
# A push subscription closer than this to its end is renewed (Gmail's last 7 days, Graph's
# 70 hours: renewed every 5 days, and every day).
RENEW_WITHIN = timedelta(days=2)
_ATTEMPTS = 3  # to record a new subscription in a feed other looks move


class FeedStores(Stores):
    """What the feed needs besides reading the mailbox: the feeds, the bus and the queue."""

    def __init__(
        self,
        agents: AgentStore,
        secrets: SecretStore,
        orgs: OrgStore,
        feeds: FeedStore,
        bus: EventBus,
        queue: SyncQueue,
    ) -> None:
        super().__init__(agents, secrets, orgs)
        self.feeds, self.bus, self.queue = feeds, bus, queue


def queue_connected_mailboxes(feeds: FeedStore, queue: SyncQueue, round_: Round) -> int:
    """The scheduler's round: every mailbox connected through the round's provider, queued
    for a look. How many were queued."""
    queued = 0
    for agent_ids in feeds.connected_agents(round_.provider):
        queue.send(
            [SyncRequest(agent_id=agent_id, reason=SyncReason.POLL) for agent_id in agent_ids]
        )
        queued += len(agent_ids)
    return queued


def look_for_new_mail(stores: FeedStores, request: SyncRequest) -> int:
    """One look at one agent's inbox; how many messages it announced. Failures are raised
    (the queue tries again, then keeps the request in its dead-letter queue) after being
    recorded: a broken connection in the agent's status, as any use of it records, any other
    failure as new mail's delivery degraded."""
    agent, config = stores.agents.load(request.agent_id)
    if (
        agent is None
        or agent.deleting
        or config is None
        or config.status is not Status.CONNECTED
        or config.connected_at is None
    ):
        return 0  # removed, disconnected or broken since it was queued: nothing to look at
    feed = _feed_of(stores.feeds, agent.agent_id, config.connected_at)
    push_failed: MailbridgeError | None = None  # the subscription's, which stops no look
    subscribed = False
    try:
        with agent_mailbox(stores, agent, config, "reading") as mailbox:
            if _subscription_due(feed.subscription, request.reason):
                try:
                    feed = _subscribe(stores.feeds, mailbox, agent.agent_id, feed)
                    subscribed = True
                except (MailServerError, ProviderError) as failure:
                    if failure.code in BREAKS_THE_CONNECTION:
                        raise
                    push_failed = failure
            found = mailbox.new_messages(feed.position, since=config.connected_at, limit=LOOK_LIMIT)
    except (MailServerError, ProviderError) as failure:
        if failure.code not in BREAKS_THE_CONNECTION:
            _record_degraded(stores.agents, config, failure, "look")
        raise
    announced = sum(
        _announce_once(stores, agent, config.connected_at, message) for message in found.messages
    )
    # Only after every message was announced: a look that dies before this is repeated.
    if found.position != feed.position:
        stores.feeds.put(feed.model_copy(update={"position": found.position}))
    if found.more:  # the rest, at once (not another renewal)
        stores.queue.send([SyncRequest(agent_id=agent.agent_id, reason=SyncReason.NOTIFIED)])
    if push_failed is not None:
        # What was new is announced; the subscription is tried again by the queue.
        _record_degraded(stores.agents, config, push_failed, "push")
        raise push_failed
    degraded = config.degraded
    # A look that works says nothing of a push that failed: only a subscription does.
    if degraded is not None and (degraded.of == "look" or subscribed):
        _record_degraded(stores.agents, config, None, degraded.of)
    return announced


def _feed_of(feeds: FeedStore, agent_id: str, connected_at: datetime) -> Feed:
    """The agent's feed for the connection made at `connected_at`. One of an earlier
    connection (another mailbox, perhaps) starts afresh: its new mail is what arrives after
    the new one was made, and its subscription's notifications no longer reach the agent
    (stopping it would need the old account's grant: it lapses by itself)."""
    feed = feeds.get(agent_id)
    if feed is not None and feed.based_on == connected_at:
        return feed
    if feed is not None and feed.subscription is not None:
        feeds.remove_subscriber(feed.subscription.id, agent_id)
    return Feed(agent_id=agent_id, based_on=connected_at, version=feed.version if feed else 0)


def _subscribe(feeds: FeedStore, mailbox: Mailbox, agent_id: str, feed: Feed) -> Feed:
    """Start or renew the provider's push, and record it at once: the provider notifies as
    soon as a subscription exists, and its notifications must find the agent (and the hash
    of their secret). The feed as stored now."""
    before = feed.subscription
    subscription = mailbox.subscribe(before)
    if subscription == before:
        return feed  # no push (IMAP, or Gmail's turned off): nothing to record
    new = subscription is not None and (before is None or subscription.id != before.id)
    if subscription is not None and new:
        feeds.add_subscriber(subscription.id, agent_id)
    # Another look may move the feed meanwhile (its position): the subscription goes into
    # whatever is stored, unless that look changed the subscription too.
    for _ in range(_ATTEMPTS):
        moved = feed.model_copy(update={"subscription": subscription})
        if feeds.put(moved):
            if before is not None and (subscription is None or subscription.id != before.id):
                feeds.remove_subscriber(before.id, agent_id)
            return moved.model_copy(update={"version": moved.version + 1})
        stored = feeds.get(agent_id)
        if stored is None or stored.based_on != feed.based_on or stored.subscription != before:
            break
        feed = stored
    # Another look subscribed (or the connection changed): this subscription is recorded
    # nowhere, so it is stopped rather than left to notify.
    if subscription is not None and new:
        with suppress(MailbridgeError):
            mailbox.unsubscribe(subscription)
        feeds.remove_subscriber(subscription.id, agent_id)
    stored = feeds.get(agent_id)
    return stored if stored is not None and stored.based_on == feed.based_on else feed


def _subscription_due(subscription: Subscription | None, reason: SyncReason) -> bool:
    """A sign-in subscribes, and so does the provider's request to renew; otherwise a
    subscription is renewed when it has less than RENEW_WITHIN left, or made when there is
    none. Renewing only then spreads a fleet's renewals over the days, within the
    providers' quotas."""
    if reason in (SyncReason.CONNECTED, SyncReason.RENEW) or subscription is None:
        return True
    return subscription.expires_at - datetime.now(UTC) < RENEW_WITHIN


def stop_new_mail(stores: Stores, feeds: FeedStore, agent: Agent, config: StoredConfig) -> None:
    """Stop the provider's push of news of this agent's inbox, before its connection goes.
    Best effort: one that cannot be stopped lapses by itself (Gmail's in 7 days, Graph's in
    3), and its notifications find no agent meanwhile."""
    feed = feeds.get(agent.agent_id)
    if feed is None or feed.subscription is None:
        return
    subscription = feed.subscription
    # Two agents may share a mailbox, and Gmail has one watch per mailbox: it stays theirs.
    if set(feeds.subscribers(subscription.id)) <= {agent.agent_id}:
        try:
            with agent_mailbox(stores, agent, config, "reading") as mailbox:
                mailbox.unsubscribe(subscription)
        except MailbridgeError as failure:
            logger.warning("push subscription left to lapse", extra={"error_code": failure.code})
    feeds.remove_subscriber(subscription.id, agent.agent_id)


def _announce_once(
    stores: FeedStores, agent: Agent, connected_at: datetime, message: MessageSummary
) -> bool:
    event = MailReceived.of(
        agent.agent_id, agent.org_id, agent.client_org_id, connected_at, message
    )
    claim = stores.feeds.claim_delivery(agent.agent_id, event.event_id, CLAIM_SECONDS)
    if claim is None:
        return False  # announced already, or being announced by another look
    try:
        stores.bus.publish(event)
    except MailbridgeError:
        with suppress(MailbridgeError):  # else the claim lapses by itself
            stores.feeds.release_delivery(agent.agent_id, event.event_id, claim)
        raise
    try:
        stores.feeds.confirm_delivery(agent.agent_id, event.event_id)
    except MailbridgeError as unnoted:
        # Announced: failing the look now would have it announced again. The feed moves
        # past it below, so no later look sees it either.
        logger.warning("announced; noting it failed", extra={"error_code": unnoted.code})
    return True


def _record_degraded(
    agents: AgentStore,
    config: StoredConfig,
    failure: MailbridgeError | None,
    of: Literal["look", "push"],
) -> None:
    """Best effort, and only over the version that was read: a save meanwhile wins."""
    degraded = None
    if failure is not None:
        before = config.degraded
        degraded = Degraded(
            problem=Problem.of(failure),
            of=of,
            since=before.since if before else datetime.now(UTC),
            failures=before.failures + 1 if before else 1,
        )
    try:
        agents.update_degraded(config.model_copy(update={"degraded": degraded}))
    except MailbridgeError as unrecorded:
        logger.warning("delivery state not recorded", extra={"error_code": unrecorded.code})
