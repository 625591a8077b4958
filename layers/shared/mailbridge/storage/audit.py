"""The audit trail as read and recorded on its own (a refusal): the entries that changes
write with them are written by `.entries`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..audit.models import AuditEntry, time_key
from ..core.settings import settings
from .aws import dynamodb, from_item, storage_errors
from .entries import AUDIT_AGENT, AUDIT_INDEX, audit_partition, write_with_entry


def _entry(item: dict[str, Any]) -> AuditEntry:
    values = from_item(item)
    return AuditEntry.model_validate(values | {"changes": json.loads(values["changes"])})


class DynamoAuditLog:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    def record(self, entry: AuditEntry) -> None:
        """An entry with no change of its own: a refusal."""
        write_with_entry([], self.table, entry)

    def history(
        self,
        org_id: str,
        agent_id: str | None,
        *,
        since: datetime | None,
        until: datetime | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[AuditEntry], str | None]:
        """Newest first, from just before `after` (a sort key this returned): the entries
        and the sort key to continue from, None when there are no more."""
        start = time_key(since) if since else "0"
        end = f"{time_key(until)}#~" if until else "~"  # '~' sorts after every entry id
        partition = audit_partition(org_id)
        query: dict[str, Any] = {
            "TableName": self.table,
            "ScanIndexForward": False,
            "Limit": limit + 1,  # one more: whether there is a next page
            "ExpressionAttributeValues": {
                ":start": {"S": start},
                ":end": {"S": end},
            },
        }
        if agent_id is None:
            key = {"pk": {"S": partition}}
            query |= {
                "KeyConditionExpression": "pk = :key AND sk BETWEEN :start AND :end",
                "ConsistentRead": True,
            }
            query["ExpressionAttributeValues"][":key"] = key["pk"]
        else:
            # The index is eventually consistent: an entry may show a moment after its change.
            key = {"pk": {"S": partition}, AUDIT_AGENT: {"S": f"{org_id}#{agent_id}"}}
            query |= {
                "IndexName": AUDIT_INDEX,
                "KeyConditionExpression": f"{AUDIT_AGENT} = :key AND sk BETWEEN :start AND :end",
            }
            query["ExpressionAttributeValues"][":key"] = key[AUDIT_AGENT]
        if after is not None:
            query["ExclusiveStartKey"] = {**key, "sk": {"S": after}}
        with storage_errors("DynamoDB"):
            items = dynamodb().query(**query)["Items"]
        entries = [_entry(item) for item in items[:limit]]
        more = len(items) > limit
        return entries, entries[-1].sort_key if more else None
