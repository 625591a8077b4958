"""What organizations share with their agents: client organizations (their email policy) and
shared OAuth apps, in the partition of their owner."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..core.settings import settings
from ..core.types import OAUTH_PROVIDERS
from ..orgs.records import AppOwner, ClientOrg, SharedApp
from .aws import (
    dynamodb,
    from_item,
    storage_errors,
    storage_unavailable,
    to_item,
    version_condition,
)
from .entries import write_with_entry

if TYPE_CHECKING:
    from ..audit.models import AuditEntry

_CLIENT_ORG_SK = "CLIENT_ORG"
_APP_SK = "OAUTH_APP#"


def owner_partition(org_id: str, client_org_id: str | None = None) -> str:
    """The partition of an organization, or of one of its client organizations (ids cannot
    contain '#')."""
    org = f"ORG#{org_id}"
    return f"{org}#CLIENT_ORG#{client_org_id}" if client_org_id else org


def _key(partition: str, sort_key: str) -> dict[str, Any]:
    return {"pk": {"S": partition}, "sk": {"S": sort_key}}


class DynamoOrgStore:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    def agent_context(
        self, org_id: str, client_org_id: str | None
    ) -> tuple[dict[tuple[AppOwner, str], SharedApp], ClientOrg | None]:
        partitions = [owner_partition(org_id)]
        if client_org_id:
            partitions.append(owner_partition(org_id, client_org_id))
        keys = [
            _key(partition, f"{_APP_SK}{provider}")
            for partition in partitions
            for provider in OAUTH_PROVIDERS
        ]
        if client_org_id:
            keys.append(_key(partitions[1], _CLIENT_ORG_SK))
        with storage_errors("DynamoDB"):
            response = dynamodb().batch_get_item(
                RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
            )
            items = response["Responses"].get(self.table, [])
            # A handful of small items: unprocessed keys only under throttling; retry once.
            unprocessed = response.get("UnprocessedKeys", {}).get(self.table)
            if unprocessed:
                retry = dynamodb().batch_get_item(RequestItems={self.table: unprocessed})
                items += retry["Responses"].get(self.table, [])
                unprocessed = retry.get("UnprocessedKeys", {}).get(self.table)
        if unprocessed:
            # A missing policy or app would read as "none": a policy check let through.
            raise storage_unavailable("DynamoDB")
        apps: dict[tuple[AppOwner, str], SharedApp] = {}
        client_org = None
        for item in items:
            if item["sk"]["S"] == _CLIENT_ORG_SK:
                client_org = ClientOrg.model_validate(from_item(item))
            else:
                app = SharedApp.model_validate(from_item(item))
                apps[(app.owner, app.provider)] = app
        return apps, client_org

    def _get(self, partition: str, sort_key: str) -> dict[str, Any] | None:
        with storage_errors("DynamoDB"):
            response = dynamodb().get_item(
                TableName=self.table, Key=_key(partition, sort_key), ConsistentRead=True
            )
        return from_item(response["Item"]) if "Item" in response else None

    def _put(
        self,
        partition: str,
        sort_key: str,
        record: BaseModel,
        replaces_version: int | None,
        entry: AuditEntry,
    ) -> None:
        item = to_item({"pk": partition, "sk": sort_key, **record.model_dump(mode="json")})
        put = {"TableName": self.table, "Item": item, **version_condition(replaces_version)}
        write_with_entry([{"Put": put}], self.table, entry)

    def get_app(self, org_id: str, client_org_id: str | None, provider: str) -> SharedApp | None:
        values = self._get(owner_partition(org_id, client_org_id), f"{_APP_SK}{provider}")
        return SharedApp.model_validate(values) if values else None

    def put_app(self, app: SharedApp, *, replaces_version: int | None, entry: AuditEntry) -> None:
        partition = owner_partition(app.org_id, app.client_org_id)
        self._put(partition, f"{_APP_SK}{app.provider}", app, replaces_version, entry)

    def mark_app_secret_expired(self, app: SharedApp, at: datetime, entry: AuditEntry) -> None:
        # An update, not a put: the version stays, so an admin's save in progress is not
        # refused as concurrent.
        update = {
            "TableName": self.table,
            "Key": _key(owner_partition(app.org_id, app.client_org_id), f"{_APP_SK}{app.provider}"),
            "UpdateExpression": "SET secret_expired_at = :at",
            "ConditionExpression": "version = :v AND attribute_not_exists(secret_expired_at)",
            "ExpressionAttributeValues": {
                ":at": {"S": at.isoformat()},
                ":v": {"N": str(app.version)},
            },
        }
        write_with_entry([{"Update": update}], self.table, entry)

    def delete_app(self, app: SharedApp, entry: AuditEntry) -> None:
        self.delete(None, [app], [entry])

    def get(self, org_id: str, client_org_id: str) -> ClientOrg | None:
        values = self._get(owner_partition(org_id, client_org_id), _CLIENT_ORG_SK)
        return ClientOrg.model_validate(values) if values else None

    def put(
        self, client_org: ClientOrg, *, replaces_version: int | None, entry: AuditEntry
    ) -> None:
        partition = owner_partition(client_org.org_id, client_org.client_org_id)
        self._put(partition, _CLIENT_ORG_SK, client_org, replaces_version, entry)

    def delete(
        self, client_org: ClientOrg | None, apps: list[SharedApp], entries: list[AuditEntry]
    ) -> None:
        records: list[tuple[dict[str, Any], int]] = [
            (
                _key(owner_partition(app.org_id, app.client_org_id), f"{_APP_SK}{app.provider}"),
                app.version,
            )
            for app in apps
        ]
        if client_org is not None:
            partition = owner_partition(client_org.org_id, client_org.client_org_id)
            records.append((_key(partition, _CLIENT_ORG_SK), client_org.version))
        deletes = [
            {
                "Delete": {
                    "TableName": self.table,
                    "Key": key,
                    "ConditionExpression": "version = :v",
                    "ExpressionAttributeValues": {":v": {"N": str(version)}},
                }
            }
            for key, version in records
        ]
        write_with_entry(deletes, self.table, *entries)
