"""Email discovery's findings, one item per domain (`DISCOVERY#<domain>`), never per address:
a burst of people at one company costs one lookup. DynamoDB's TTL deletes an item some time
after it expires; until then a read passes it over, as it does an item that no longer reads as
the current findings (written by an older version): looked up again, and overwritten."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from ..core.settings import settings
from ..discovery.models import EmailDiscovery
from .aws import dynamodb, storage_errors

_SORT_KEY = "DISCOVERY"


class DynamoDiscoveryCache:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    def get(self, domain: str, now: datetime) -> EmailDiscovery | None:
        with storage_errors("DynamoDB"):
            item = (
                dynamodb()
                .get_item(
                    TableName=self.table,
                    Key={"pk": {"S": f"DISCOVERY#{domain}"}, "sk": {"S": _SORT_KEY}},
                )
                .get("Item")
            )
        if item is None or int(item["expires_at"]["N"]) <= now.timestamp():
            return None
        try:
            return EmailDiscovery.model_validate_json(item["discovery"]["S"])
        except ValidationError:
            return None

    def put(self, discovery: EmailDiscovery, expires_at: datetime) -> None:
        with storage_errors("DynamoDB"):
            dynamodb().put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": f"DISCOVERY#{discovery.domain}"},
                    "sk": {"S": _SORT_KEY},
                    "discovery": {"S": discovery.model_dump_json()},
                    "expires_at": {"N": str(int(expires_at.timestamp()))},
                },
            )
