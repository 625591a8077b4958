"""Agents, their email-config records and token-refresh locks: one partition per agent."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from ..agents.models import Agent
from ..connections.records import Status, StoredConfig, TokenRef
from ..core.errors import StaleWrite
from ..core.settings import settings
from .agent_keys import (
    CONNECTED_PROVIDER,
    GRANT_INDEX,
    OAUTH_GRANT,
    agent_partition,
    delivered_partition,
)
from .aws import (
    conditional_write,
    dynamodb,
    from_item,
    query_pages,
    serialize,
    storage_errors,
    storage_unavailable,
    to_item,
    version_condition,
)
from .entries import write_with_entry

if TYPE_CHECKING:
    from ..audit.models import AuditEntry

_AGENT_SK = "AGENT"
_CONFIG_SK = "EMAIL_CONFIG"
_DISCONNECTED_SK = "EMAIL_CONFIG_DISCONNECTED"  # the last config's version (Agent says why)
_LOCK_SK = "TOKEN_REFRESH_LOCK"
_BATCH = 25  # BatchWriteItem's most
_BATCH_ATTEMPTS = 5


def _connected_provider(config: StoredConfig) -> str | None:
    """The index attribute of a connected config: the new-mail scheduler's list of who to
    poll (IMAP) or whose subscription to renew (Gmail, Graph), read without a scan."""
    return config.connection.provider if config.status is Status.CONNECTED else None


# With the tokens, the grant they hold: a record written before the ByGrant index was is
# indexed at its first refresh.
_SET_TOKENS = f"SET tokens = :tokens, {OAUTH_GRANT} = :grant"


def _tokens_values(config: StoredConfig, tokens: TokenRef) -> dict[str, Any]:
    assert config.oauth_grant is not None  # tokens are a grant's
    return {":tokens": serialize(tokens.model_dump()), ":grant": {"S": config.oauth_grant}}


class DynamoAgentStore:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    def _key(self, agent_id: str, sort_key: str) -> dict[str, Any]:
        return {"pk": {"S": agent_partition(agent_id)}, "sk": {"S": sort_key}}

    def load(self, agent_id: str) -> tuple[Agent | None, StoredConfig | None]:
        with storage_errors("DynamoDB"):
            response = dynamodb().query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": agent_partition(agent_id)}},
                ConsistentRead=True,
            )
        agent = config = None
        last_config_version = 0
        for item in response["Items"]:
            kind = item["sk"]["S"]
            if kind == _AGENT_SK:
                agent = Agent.model_validate(from_item(item))
            elif kind == _CONFIG_SK:
                config = StoredConfig.model_validate(from_item(item))
            elif kind == _DISCONNECTED_SK:
                last_config_version = int(item["version"]["N"])
        if agent is not None:
            agent.last_config_version = last_config_version
        return agent, config

    def put_agent(self, agent: Agent, entry: AuditEntry) -> bool:
        item = to_item(
            {"pk": agent_partition(agent.agent_id), "sk": _AGENT_SK, **agent.model_dump()}
        )
        put = {
            "TableName": self.table,
            "Item": item,
            # Not over one being removed: the removal would delete it after this answered.
            "ConditionExpression": "attribute_not_exists(pk) "
            "OR (org_id = :org AND attribute_not_exists(deleting))",
            "ExpressionAttributeValues": {":org": {"S": agent.org_id}},
        }
        try:
            write_with_entry([{"Put": put}], self.table, entry)
        except StaleWrite:
            return False
        return True

    def delete_agent(self, agent_id: str) -> None:
        agent_key = self._key(agent_id, _AGENT_SK)
        keys = [
            key
            for partition in (
                f"RATE#AGENT#{agent_id}",
                f"IDEMPOTENCY#{agent_id}",
                delivered_partition(agent_id),
                agent_partition(agent_id),
            )
            for key in self._keys(partition)
            if key != agent_key
        ]
        with storage_errors("DynamoDB"):
            for start in range(0, len(keys), _BATCH):
                batch = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + _BATCH]]
                pending: dict[str, Any] = {self.table: batch}
                for attempt in range(_BATCH_ATTEMPTS):
                    pending = (
                        dynamodb().batch_write_item(RequestItems=pending).get("UnprocessedItems")
                        or {}
                    )
                    if not pending:
                        break
                    time.sleep(0.05 * 2**attempt)  # throttled: back off, as botocore would
                else:
                    raise storage_unavailable("DynamoDB")
            # The agent last: a failure before it leaves the agent, for the retry to find.
            dynamodb().delete_item(TableName=self.table, Key=agent_key)

    def _keys(self, partition: str) -> list[dict[str, Any]]:
        pages = query_pages(
            self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": partition}},
            ProjectionExpression="pk, sk",
            ConsistentRead=True,
        )
        return [item for items in pages for item in items]

    def mark_deleting(self, agent_id: str, org_id: str) -> bool:
        try:
            conditional_write(
                self.table,
                "update_item",
                Key=self._key(agent_id, _AGENT_SK),
                UpdateExpression="SET deleting = :yes",
                ConditionExpression="attribute_exists(pk) AND org_id = :org",
                ExpressionAttributeValues={":yes": {"BOOL": True}, ":org": {"S": org_id}},
            )
        except StaleWrite:
            return False
        return True

    def put_config(
        self,
        config: StoredConfig,
        *,
        replaces_version: int | None,
        org_id: str,
        entry: AuditEntry,
    ) -> None:
        item = to_item(
            {
                "pk": agent_partition(config.agent_id),
                "sk": _CONFIG_SK,
                **config.model_dump(mode="json"),
                CONNECTED_PROVIDER: _connected_provider(config),
                OAUTH_GRANT: config.oauth_grant,
            }
        )
        # With the agent still there, the organization's and not being removed, in the same
        # transaction: a save racing the agent's removal never outlives it.
        agent_check = {
            "TableName": self.table,
            "Key": self._key(config.agent_id, _AGENT_SK),
            "ConditionExpression": "attribute_exists(pk) AND org_id = :org "
            "AND attribute_not_exists(deleting)",
            "ExpressionAttributeValues": {":org": {"S": org_id}},
        }
        put = {"TableName": self.table, "Item": item, **version_condition(replaces_version)}
        checks = [{"ConditionCheck": agent_check}]
        if replaces_version is None:
            # A new connection's version goes on from the last one's, still the last.
            last = config.version - 1
            checks.append(
                {
                    "ConditionCheck": {
                        "TableName": self.table,
                        "Key": self._key(config.agent_id, _DISCONNECTED_SK),
                        **version_condition(last or None),
                    }
                }
            )
        write_with_entry([*checks, {"Put": put}], self.table, entry)

    def update_status(self, config: StoredConfig, entry: AuditEntry) -> bool:
        # A test that ran against settings the user has since replaced must not overwrite
        # the newer record; its result is simply not recorded.
        values = config.model_dump(
            mode="json", include={"status", "last_error", "last_test", "connected_at"}
        )
        provider = _connected_provider(config)
        index = (
            f", {CONNECTED_PROVIDER} = :provider" if provider else f" REMOVE {CONNECTED_PROVIDER}"
        )
        return self._update_if_version(
            config,
            "SET #status = :status, last_error = :last_error, last_test = :last_test, "
            "connected_at = :connected_at" + index,
            {f":{key}": serialize(value) for key, value in values.items()}
            | ({":provider": {"S": provider}} if provider else {}),
            names={"#status": "status"},
            entry=entry,
        )

    def update_degraded(self, config: StoredConfig) -> bool:
        degraded = config.model_dump(mode="json", include={"degraded"})["degraded"]
        return self._update_if_version(
            config, "SET degraded = :degraded", {":degraded": serialize(degraded)}
        )

    def update_tokens(self, config: StoredConfig, tokens: TokenRef) -> bool:
        # A save since then replaced the app, and with it these tokens.
        return self._update_if_version(config, _SET_TOKENS, _tokens_values(config, tokens))

    def update_grant(
        self, config: StoredConfig, tokens: TokenRef, granted_scopes: list[str], entry: AuditEntry
    ) -> bool:
        return self._update_if_version(
            config,
            f"{_SET_TOKENS}, #connection.#authorization.granted_scopes = :scopes",
            _tokens_values(config, tokens) | {":scopes": serialize(granted_scopes)},
            names={"#connection": "connection", "#authorization": "authorization"},
            entry=entry,
        )

    def _update_if_version(
        self,
        config: StoredConfig,
        expression: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
        entry: AuditEntry | None = None,
    ) -> bool:
        """Update the record if it is still `config`'s version (False if not), with its
        audit entry in the same transaction when the update is a change of the connection."""
        update: dict[str, Any] = {
            "Key": self._key(config.agent_id, _CONFIG_SK),
            "UpdateExpression": expression,
            "ConditionExpression": "version = :v",
            "ExpressionAttributeValues": {":v": {"N": str(config.version)}, **values},
            **({"ExpressionAttributeNames": names} if names else {}),
        }
        try:
            if entry is None:
                conditional_write(self.table, "update_item", **update)
            else:
                write_with_entry(
                    [{"Update": {"TableName": self.table, **update}}], self.table, entry
                )
        except StaleWrite:
            return False
        return True

    def grant_holders(self, config: StoredConfig) -> set[str]:
        grant = config.oauth_grant
        if grant is None:
            return set()
        pages = query_pages(
            self.table,
            IndexName=GRANT_INDEX,
            KeyConditionExpression=f"{OAUTH_GRANT} = :grant",
            ExpressionAttributeValues={":grant": {"S": grant}},
        )
        return {item["agent_id"]["S"] for items in pages for item in items}

    def delete_config(self, config: StoredConfig, entry: AuditEntry) -> None:
        delete = {
            "TableName": self.table,
            "Key": self._key(config.agent_id, _CONFIG_SK),
            "ConditionExpression": "version = :v",
            "ExpressionAttributeValues": {":v": {"N": str(config.version)}},
        }
        disconnected = {
            "TableName": self.table,
            "Item": {
                **self._key(config.agent_id, _DISCONNECTED_SK),
                "version": {"N": str(config.version)},
            },
        }
        write_with_entry([{"Delete": delete}, {"Put": disconnected}], self.table, entry)

    def try_lock(self, agent_id: str, holder: str, lease_seconds: int) -> bool:
        now = int(time.time())
        item = to_item(
            {
                "pk": agent_partition(agent_id),
                "sk": _LOCK_SK,
                "holder": holder,
                "lease_until": now + lease_seconds,
                "expires_at": now + lease_seconds + 3600,  # TTL sweeps a crashed holder's
            }
        )
        try:
            conditional_write(
                self.table,
                "put_item",
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except StaleWrite:
            return False
        return True

    def unlock(self, agent_id: str, holder: str) -> None:
        # A failed condition: the lease ran out and another holder has it, theirs to release.
        with contextlib.suppress(StaleWrite):
            conditional_write(
                self.table,
                "delete_item",
                Key=self._key(agent_id, _LOCK_SK),
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )
