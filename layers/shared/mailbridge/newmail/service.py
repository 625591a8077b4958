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
from typing import TYPE_CHECKING

from ..agents.models import Agent
from ..connections.models import Degraded, Problem, Status, StoredConfig
from ..core.errors import MailbridgeError, MailServerError, ProviderError
from ..core.observability import logger
from ..mail.mailboxes import Mailbox
from ..mail.models import MessageSummary
from ..mail.service import BREAKS_THE_CONNECTION, Stores, agent_mailbox
from .models import Feed, MailReceived, Round, Subscription, SyncReason, SyncRequest

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
# A push subscription closer than this to its end is renewed at the next look.
RENEW_WITHIN = timedelta(days=2)


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
    for a look (a poll) or for its push subscription's renewal and a look (a renewal). How
    many were queued."""
    queued = 0
    for agent_ids in feeds.connected_agents(round_.provider):
        requests = [SyncRequest(agent_id=agent_id, reason=round_.reason) for agent_id in agent_ids]
        queue.send(requests)
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
    feed = stores.feeds.get(agent.agent_id)
    if feed is None or feed.based_on != config.connected_at:
        # A new connection (another mailbox, perhaps): its new mail is what arrives after it.
        feed = Feed(
            agent_id=agent.agent_id,
            based_on=config.connected_at,
            version=feed.version if feed else 0,
        )
    push_failed: MailbridgeError | None = None  # the subscription's, which stops no look
    try:
        with agent_mailbox(stores, agent, config, "reading") as mailbox:
            if _subscription_due(feed.subscription, request.reason):
                try:
                    feed = _subscribe(stores, mailbox, agent, config.connection.provider, feed)
                except (MailServerError, ProviderError) as failure:
                    if failure.code in BREAKS_THE_CONNECTION:
                        raise
                    push_failed = failure
            found = mailbox.new_messages(feed.position, since=config.connected_at, limit=LOOK_LIMIT)
    except (MailServerError, ProviderError) as failure:
        if failure.code not in BREAKS_THE_CONNECTION:
            _record_degraded(stores.agents, config, failure)
        raise
    announced = sum(_announce_once(stores, agent, message) for message in found.messages)
    # Only after every message was announced: a look that dies before this is repeated.
    if found.position != feed.position:
        stores.feeds.put(feed.model_copy(update={"position": found.position}))
    if found.more:
        stores.queue.send([request])
    if push_failed is not None:
        # What was new is announced; the subscription is tried again by the queue.
        _record_degraded(stores.agents, config, push_failed)
        raise push_failed
    if config.degraded is not None:
        _record_degraded(stores.agents, config, None)
    return announced


def _subscribe(
    stores: FeedStores, mailbox: Mailbox, agent: Agent, provider: str, feed: Feed
) -> Feed:
    """Start or renew the provider's push, and record it at once: the provider notifies as
    soon as a subscription exists, and its notifications must find the agent (and the hash
    of their secret). The feed as stored now."""
    before = feed.subscription
    subscription = mailbox.subscribe(before)
    if subscription == before:
        return feed  # no push (IMAP, or Gmail's turned off): nothing to record
    new = subscription is not None and (before is None or subscription.id != before.id)
    if subscription is not None and new:
        stores.feeds.add_subscriber(provider, subscription.id, agent.agent_id)
    moved = feed.model_copy(update={"subscription": subscription})
    if not stores.feeds.put(moved):
        # Another look moved the feed meanwhile, and subscribed too: this subscription is
        # recorded nowhere, so it is stopped rather than left to notify.
        if subscription is not None and new:
            with suppress(MailbridgeError):
                mailbox.unsubscribe(subscription)
            stores.feeds.remove_subscriber(provider, subscription.id, agent.agent_id)
        stored = stores.feeds.get(agent.agent_id)
        return stored if stored is not None and stored.based_on == feed.based_on else feed
    if before is not None and (subscription is None or subscription.id != before.id):
        stores.feeds.remove_subscriber(provider, before.id, agent.agent_id)
    return moved.model_copy(update={"version": moved.version + 1})


def _subscription_due(subscription: Subscription | None, reason: SyncReason) -> bool:
    """Push subscriptions are renewed by the daily round and at each sign-in, and sooner if
    one would lapse before the next round (or there is none yet)."""
    if reason in (SyncReason.RENEW, SyncReason.CONNECTED) or subscription is None:
        return True
    return subscription.expires_at - datetime.now(UTC) < RENEW_WITHIN


def stop_new_mail(stores: Stores, feeds: FeedStore, agent: Agent, config: StoredConfig) -> None:
    """Stop the provider's push of news of this agent's inbox, before its connection goes.
    Best effort: one that cannot be stopped lapses by itself (Gmail's in 7 days, Graph's in
    3), and its notifications find no agent meanwhile."""
    feed = feeds.get(agent.agent_id)
    if feed is None or feed.subscription is None:
        return
    provider, subscription = config.connection.provider, feed.subscription
    # Two agents may share a mailbox, and Gmail has one watch per mailbox: it stays theirs.
    if set(feeds.subscribers(provider, subscription.id)) <= {agent.agent_id}:
        try:
            with agent_mailbox(stores, agent, config, "reading") as mailbox:
                mailbox.unsubscribe(subscription)
        except MailbridgeError as failure:
            logger.warning("push subscription left to lapse", extra={"error_code": failure.code})
    feeds.remove_subscriber(provider, subscription.id, agent.agent_id)


def _announce_once(stores: FeedStores, agent: Agent, message: MessageSummary) -> bool:
    event = MailReceived.of(agent.agent_id, agent.org_id, agent.client_org_id, message)
    if not stores.feeds.claim_delivery(agent.agent_id, event.event_id, CLAIM_SECONDS):
        return False  # announced already, or being announced by another look
    try:
        stores.bus.publish(event)
    except MailbridgeError:
        with suppress(MailbridgeError):  # else the claim lapses by itself
            stores.feeds.release_delivery(agent.agent_id, event.event_id)
        raise
    try:
        stores.feeds.confirm_delivery(agent.agent_id, event.event_id)
    except MailbridgeError as unnoted:
        # Announced: failing the look now would have it announced again. The feed moves
        # past it below, so no later look sees it either.
        logger.warning("announced; noting it failed", extra={"error_code": unnoted.code})
    return True


def _record_degraded(
    agents: AgentStore, config: StoredConfig, failure: MailbridgeError | None
) -> None:
    """Best effort, and only over the version that was read: a save meanwhile wins."""
    degraded = None
    if failure is not None:
        before = config.degraded
        degraded = Degraded(
            problem=Problem.of(failure),
            since=before.since if before else datetime.now(UTC),
            failures=before.failures + 1 if before else 1,
        )
    try:
        agents.update_degraded(config.model_copy(update={"degraded": degraded}))
    except MailbridgeError as unrecorded:
        logger.warning("delivery state not recorded", extra={"error_code": unrecorded.code})
