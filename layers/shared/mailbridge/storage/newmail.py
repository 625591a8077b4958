"""The new-mail feed's AWS: each agent's place in its inbox (a record in the agent's own
partition), the note of every message announced (a partition per agent, swept by the TTL),
the index of connected agents, the SQS queue of mailboxes to look at and the EventBridge bus."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..core.errors import StaleWrite
from ..core.settings import settings
from ..newmail.models import EVENT_DETAIL_TYPE, EVENT_SOURCE, Feed, SyncRequest
from .agent_keys import CONNECTED_INDEX, CONNECTED_PROVIDER, agent_partition, delivered_partition
from .aws import (
    conditional_write,
    dynamodb,
    events,
    from_item,
    query_pages,
    sqs,
    storage_errors,
    storage_unavailable,
    to_item,
    version_condition,
)

if TYPE_CHECKING:
    from ..newmail.events import MailReceived

_FEED_SK = "MAIL_FEED"
# How long the note of an announced message is kept: longer than any provider redelivers
# or lets a history be replayed (Gmail keeps a history id about a week).
DELIVERED_LIFETIME_SECONDS = 14 * 24 * 3600
_SQS_BATCH = 10  # SendMessageBatch's most
# botocore's default pool keeps 10 connections per client: as many batches at once.
_senders = ThreadPoolExecutor(max_workers=10, thread_name_prefix="sqs-send")


class DynamoFeedStore:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    def connected_agents(self, provider: str) -> Iterator[list[str]]:
        """The ids of the agents connected through `provider`, a page at a time."""
        pages = query_pages(
            self.table,
            IndexName=CONNECTED_INDEX,
            KeyConditionExpression=f"{CONNECTED_PROVIDER} = :provider",
            ExpressionAttributeValues={":provider": {"S": provider}},
        )
        for items in pages:
            yield [item["agent_id"]["S"] for item in items]

    def get(self, agent_id: str) -> Feed | None:
        with storage_errors("DynamoDB"):
            item = (
                dynamodb()
                .get_item(TableName=self.table, Key=_feed_key(agent_id), ConsistentRead=True)
                .get("Item")
            )
        return Feed.model_validate(from_item(item)) if item else None

    def put(self, feed: Feed) -> bool:
        """Stores `feed` as the next version of the one read (version 0: none was); False if
        another worker moved it meanwhile."""
        stored = feed.model_copy(update={"version": feed.version + 1})
        try:
            conditional_write(
                self.table,
                "put_item",
                Item=to_item(
                    {**_plain(_feed_key(feed.agent_id)), **stored.model_dump(mode="json")}
                ),
                **version_condition(feed.version or None),
            )
        except StaleWrite:
            return False
        return True

    def claim_delivery(self, agent_id: str, message_id: str, lease_seconds: int) -> str | None:
        """Claims the announcement of this message; the claim's token, or None if it was
        announced, or another worker holds the claim (which lapses after `lease_seconds`
        if its holder died)."""
        now = int(time.time())
        # Two claims in one second would otherwise be the same item, and the loser's put
        # would pass for its own write whose answer was lost.
        claim = uuid.uuid4().hex
        try:
            conditional_write(
                self.table,
                "put_item",
                Item=to_item(
                    {
                        "pk": delivered_partition(agent_id),
                        "sk": message_id,
                        "claimed_until": now + lease_seconds,
                        "claim": claim,
                        "expires_at": now + DELIVERED_LIFETIME_SECONDS,
                    }
                ),
                ConditionExpression="attribute_not_exists(pk) OR "
                "(attribute_not_exists(announced) AND claimed_until < :now)",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except StaleWrite:
            return None
        return claim

    def confirm_delivery(self, agent_id: str, message_id: str) -> None:
        with storage_errors("DynamoDB"):
            dynamodb().update_item(
                TableName=self.table,
                Key=_delivered_key(agent_id, message_id),
                UpdateExpression="SET announced = :yes",
                ExpressionAttributeValues={":yes": {"BOOL": True}},
            )

    def release_delivery(self, agent_id: str, message_id: str, claim: str) -> None:
        """Gives up `claim`, if it is still the message's (a claim that lapsed may be
        another worker's now)."""
        with suppress(StaleWrite):  # not ours any more
            conditional_write(
                self.table,
                "delete_item",
                Key=_delivered_key(agent_id, message_id),
                ConditionExpression="claim = :claim AND attribute_not_exists(announced)",
                ExpressionAttributeValues={":claim": {"S": claim}},
            )

    # -- who a push provider's notification is for (subscription ids are the provider's:
    # a Gmail address, a Graph GUID; they cannot collide)
    def add_subscriber(self, subscription_id: str, agent_id: str) -> None:
        with storage_errors("DynamoDB"):
            dynamodb().put_item(
                TableName=self.table,
                Item=to_item(
                    {
                        "pk": _subscription_partition(subscription_id),
                        "sk": agent_id,
                        "agent_id": agent_id,
                    }
                ),
            )

    def remove_subscriber(self, subscription_id: str, agent_id: str) -> None:
        with storage_errors("DynamoDB"):
            dynamodb().delete_item(
                TableName=self.table,
                Key={
                    "pk": {"S": _subscription_partition(subscription_id)},
                    "sk": {"S": agent_id},
                },
            )

    def subscribers(self, subscription_id: str) -> list[str]:
        """The agents a subscription's notification is for (a Gmail address may be two
        agents' mailbox)."""
        with storage_errors("DynamoDB"):
            answer = dynamodb().query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": _subscription_partition(subscription_id)}},
                ProjectionExpression="agent_id",
                Limit=100,
            )
        return [item["agent_id"]["S"] for item in answer["Items"]]


class EventBridgeBus:
    def __init__(self, bus_name: str | None = None) -> None:
        self.bus_name = bus_name or settings().event_bus_name

    def publish(self, event: MailReceived) -> None:
        with storage_errors("EventBridge"):
            answer = events().put_events(
                Entries=[
                    {
                        "EventBusName": self.bus_name,
                        "Source": EVENT_SOURCE,
                        "DetailType": EVENT_DETAIL_TYPE,
                        "Detail": event.model_dump_json(),
                        "Time": datetime.now(UTC),
                    }
                ]
            )
        # PutEvents answers 200 with the entries it could not take.
        if answer.get("FailedEntryCount"):
            raise storage_unavailable("EventBridge")


class SqsSyncQueue:
    def __init__(self, queue_url: str | None = None) -> None:
        self.queue_url = queue_url or settings().sync_queue_url

    def send(self, requests: list[SyncRequest]) -> None:
        """In batches of ten, several at a time: a round queues a page of thousands of
        mailboxes, and one batch after the other would take minutes at 100,000."""
        batches = [
            requests[start : start + _SQS_BATCH] for start in range(0, len(requests), _SQS_BATCH)
        ]
        if len(batches) == 1:
            self._send_batch(batches[0])
            return
        list(_senders.map(self._send_batch, batches))  # the first failure is raised

    def _send_batch(self, batch: list[SyncRequest]) -> None:
        pending = {str(index): request.model_dump_json() for index, request in enumerate(batch)}
        for _ in range(3):
            with storage_errors("SQS"):
                answer = sqs().send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": key, "MessageBody": body} for key, body in pending.items()],
                )
            # A batch answers 200 with the entries it could not take: sent again.
            pending = {entry["Id"]: pending[entry["Id"]] for entry in answer.get("Failed", [])}
            if not pending:
                return
        raise storage_unavailable("SQS")


def _feed_key(agent_id: str) -> dict[str, Any]:
    return {"pk": {"S": agent_partition(agent_id)}, "sk": {"S": _FEED_SK}}


def _delivered_key(agent_id: str, message_id: str) -> dict[str, Any]:
    return {"pk": {"S": delivered_partition(agent_id)}, "sk": {"S": message_id}}


def _subscription_partition(subscription_id: str) -> str:
    return f"SUBSCRIPTION#{subscription_id}"


def _plain(key: dict[str, Any]) -> dict[str, str]:
    return {name: value["S"] for name, value in key.items()}
