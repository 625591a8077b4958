"""Started OAuth sign-ins, keyed by a hash of their state: a table reader cannot use what it
reads, and each one can be taken exactly once."""

from __future__ import annotations

import json
from typing import Any

from ..core.settings import settings
from ..oauth.models import PendingAuthorization
from .aws import dynamodb, storage_errors

_STATE_SK = "OAUTH_STATE"


class DynamoAuthorizationStore:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    @staticmethod
    def _key(state_hash: str) -> dict[str, Any]:
        return {"pk": {"S": f"OAUTH_STATE#{state_hash}"}, "sk": {"S": _STATE_SK}}

    def put(self, state_hash: str, pending: PendingAuthorization) -> None:
        # One JSON attribute, so the provider's flow data keeps its exact types (DynamoDB
        # would turn its numbers into Decimals); expires_at beside it is the item's TTL.
        item = {
            **self._key(state_hash),
            "document": {"S": pending.model_dump_json(exclude={"expires_at"})},
            "expires_at": {"N": str(pending.expires_at)},
        }
        with storage_errors("DynamoDB"):
            dynamodb().put_item(TableName=self.table, Item=item)

    def take(self, state_hash: str) -> PendingAuthorization | None:
        with storage_errors("DynamoDB"):
            response = dynamodb().delete_item(
                TableName=self.table, Key=self._key(state_hash), ReturnValues="ALL_OLD"
            )
        item = response.get("Attributes")
        if not item:
            return None
        document = json.loads(item["document"]["S"])
        return PendingAuthorization(**document, expires_at=int(item["expires_at"]["N"]))
