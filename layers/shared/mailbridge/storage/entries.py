"""A change and its audit entries, written in one DynamoDB transaction: every store that
changes settings writes through here. The trail's own partition layout: one partition per
organization, sorted by the entry's time then its id, and an index by agent."""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ..core.errors import ErrorCode, StaleWrite, Unavailable
from ..core.settings import settings
from .aws import dynamodb, storage_errors, storage_unavailable, to_item

if TYPE_CHECKING:
    from ..audit.models import AuditEntry

# An organization's entries by agent: "<org>#<agent>", so that an agent id another
# organization used once never shows that organization's entries.
AUDIT_AGENT = "audit_agent"
AUDIT_INDEX = "AuditByAgent"
_DAY = 86400
_CONFLICT_ATTEMPTS = 4


def audit_partition(org_id: str) -> str:
    return f"AUDIT#{org_id}"


def entry_put(table: str, entry: AuditEntry) -> dict[str, Any]:
    """The entry as an item of a transaction; kept for the stack's retention (TTL). Its
    changes are one JSON string: their values come back as they went in (DynamoDB's
    numbers would come back as decimals)."""
    values = entry.model_dump(mode="json")
    item = to_item(
        {
            "pk": audit_partition(entry.org_id),
            "sk": entry.sort_key,
            AUDIT_AGENT: f"{entry.org_id}#{entry.agent_id}" if entry.agent_id else None,
            "expires_at": int(entry.at.timestamp()) + settings().audit_retention_days * _DAY,
            **values,
            "changes": json.dumps(values["changes"]),
        }
    )
    return {"Put": {"TableName": table, "Item": item}}


def write_with_entry(items: list[dict[str, Any]], table: str, *entries: AuditEntry) -> None:
    """The change's items and its entries: all or none. A failed condition of the change
    is `StaleWrite`.

    botocore retries a call whose answer was lost with the same token, which DynamoDB
    recognizes as applied; should it not, a put finding exactly the item it writes is that
    case, and a success. A transaction that met another one on the same items is tried
    again, after a moment, a few times: botocore does not retry those."""
    for item in items:
        if "Put" in item:
            item["Put"]["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    transaction: list[Any] = [*items, *(entry_put(table, entry) for entry in entries)]
    for attempt in range(_CONFLICT_ATTEMPTS):
        with storage_errors("DynamoDB"):
            try:
                dynamodb().transact_write_items(
                    TransactItems=transaction, ClientRequestToken=uuid.uuid4().hex
                )
                return
            except ClientError as error:
                if error.response["Error"]["Code"] != "TransactionCanceledException":
                    raise  # storage_errors answers it
                reasons = error.response.get("CancellationReasons", [])
        codes = {reason.get("Code", "None") for reason in reasons} - {"None"}
        if codes == {"TransactionConflict"}:
            time.sleep(random.uniform(0.05, 0.2) * 2**attempt)  # noqa: S311 (jitter)
            continue
        if codes != {"ConditionalCheckFailed"}:  # throttled, an item too large...
            raise storage_unavailable("DynamoDB")
        failed = [
            (item, reason)
            for item, reason in zip(items, reasons, strict=False)
            if reason.get("Code", "None") != "None"
        ]
        if all("Put" in item and r.get("Item") == item["Put"]["Item"] for item, r in failed):
            return
        raise StaleWrite
    raise Unavailable(
        ErrorCode.CONCURRENT_UPDATE,
        "Other changes to the same settings were being written at the same moment.",
        hint="Retry in a moment.",
        retry_after=1,
    )
