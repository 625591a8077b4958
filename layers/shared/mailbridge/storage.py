"""DynamoDB and Secrets Manager: the only module that imports boto3.

Table layout (one table, see template.yaml):
    pk = "AGENT#<agent_id>", sk = "AGENT"         the agent: org, optional client org, name
    pk = "AGENT#<agent_id>", sk = "EMAIL_CONFIG"  its email connection (no secret in it)
    pk = "AGENT#<agent_id>", sk = "TOKEN_REFRESH_LOCK"  held while its OAuth token refreshes
    pk = "OAUTH_STATE#<sha256 of state>", sk = "OAUTH_STATE"  a started authorization (TTL)
    pk = "ORG#<org>#CLIENT_ORG#<id>", sk = "CLIENT_ORG"  a client organization, its policy
    pk = "SENDING#<org>#<client org>", sk = "SENT#<window>#<key>"  messages sent (TTL)
    pk = "RATE#AGENT#<id>" or "RATE#ORG#<id>", sk = "TESTS#<window>#<key>"  tests run (TTL)
    pk = "ORG#<org>" or "ORG#<org>#CLIENT_ORG#<id>", sk = "OAUTH_APP#<provider>"  a shared app
An agent and its config share a partition, so both come back in one Query. A client
organization lives inside its organization's keys: ids are the platform's, and two
organizations may well both have a client called "acme".

Secrets live at fixed names per agent (and per shared app), and records pin the version
they were written with; see SecretStore.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from .errors import ConfigConflict, Conflict, ServiceUnavailable
from .limits import LimitReached, Window
from .models import (
    Agent,
    AppOwner,
    ClientOrg,
    PendingAuthorization,
    SecretRef,
    SharedApp,
    StoredConfig,
    TokenRef,
)
from .settings import settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

# Standard retries with backoff, and timeouts well inside an API Gateway request.
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5
)
_AGENT_SK = "AGENT"
_CONFIG_SK = "EMAIL_CONFIG"
_LOCK_SK = "TOKEN_REFRESH_LOCK"
_STATE_SK = "OAUTH_STATE"
_CLIENT_ORG_SK = "CLIENT_ORG"
_APP_SK = "OAUTH_APP#"
_PROVIDERS = ("microsoft", "google")
_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


@cache
def _dynamodb() -> DynamoDBClient:
    return boto3.client("dynamodb", config=_BOTO_CONFIG)


@cache
def _secretsmanager() -> SecretsManagerClient:
    return boto3.client("secretsmanager", config=_BOTO_CONFIG)


def _unavailable(service: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        "storage_unavailable",
        f"{service} did not answer; the request did not complete.",
        hint="Retry in a few seconds: a retry finishes whatever this one left undone.",
        retry_after=2,
    )


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serialize(value) for key, value in values.items() if value is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _deserialize(value) for key, value in item.items()}


def _version_condition(replaces_version: int | None) -> dict[str, Any]:
    """Write only over that version (None: only if nothing is there yet)."""
    if replaces_version is None:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {
        "ConditionExpression": "version = :v",
        "ExpressionAttributeValues": {":v": {"N": str(replaces_version)}},
    }


def _conditional(table: str, operation: str, **kwargs: Any) -> None:
    """A conditional write; a failed condition is `ConfigConflict`.

    botocore retries a write whose answer was lost, and if the first attempt was applied the
    retry fails its own condition: a put finding exactly the item it writes is that case,
    and a success."""
    try:
        getattr(_dynamodb(), operation)(
            TableName=table, ReturnValuesOnConditionCheckFailure="ALL_OLD", **kwargs
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise _unavailable("DynamoDB") from error
        if operation == "put_item" and error.response.get("Item") == kwargs["Item"]:
            return
        raise ConfigConflict from None
    except BotoCoreError as error:
        raise _unavailable("DynamoDB") from error


class AgentStore:
    """Agents and their email-config records in the DynamoDB table."""

    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    @staticmethod
    def _pk(agent_id: str) -> dict[str, Any]:
        return {"S": f"AGENT#{agent_id}"}

    def load(self, agent_id: str) -> tuple[Agent | None, StoredConfig | None]:
        """The agent and its config, in one round trip."""
        try:
            response = _dynamodb().query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": self._pk(agent_id)},
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error
        agent = config = None
        for item in response["Items"]:
            values = _from_item(item)
            kind = values.pop("sk")
            values.pop("pk")
            if kind == _AGENT_SK:
                agent = Agent.model_validate(values)
            elif kind == _CONFIG_SK:
                config = StoredConfig.model_validate(values)
        return agent, config

    def put_agent(self, agent: Agent) -> None:
        item = _to_item({"pk": f"AGENT#{agent.agent_id}", "sk": _AGENT_SK, **agent.model_dump()})
        try:
            _dynamodb().put_item(TableName=self.table, Item=item)
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error

    def put_config(self, config: StoredConfig, *, replaces_version: int | None) -> None:
        """Write the whole record if it is still at `replaces_version` (None: must not exist)."""
        item = _to_item(
            {"pk": f"AGENT#{config.agent_id}", "sk": _CONFIG_SK, **config.model_dump(mode="json")}
        )
        self._conditional("put_item", Item=item, **_version_condition(replaces_version))

    def update_status(self, config: StoredConfig) -> bool:
        """Record status, last error and last test, only if the config is still that version.

        A test that ran against settings the user has since replaced must not overwrite the
        newer record; its result is simply not recorded (returns False).
        """
        values = config.model_dump(mode="json", include={"status", "last_error", "last_test"})
        try:
            self._conditional(
                "update_item",
                Key={"pk": self._pk(config.agent_id), "sk": {"S": _CONFIG_SK}},
                UpdateExpression="SET #status = :status, last_error = :last_error, "
                "last_test = :last_test",
                ConditionExpression="version = :v",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":v": {"N": str(config.version)},
                    **{f":{key}": _serialize(value) for key, value in values.items()},
                },
            )
        except ConfigConflict:
            return False
        return True

    def update_tokens(self, config: StoredConfig, tokens: TokenRef) -> bool:
        """Point the record at refreshed tokens, only if its settings are still that
        version (a save since then replaced the app, and with it these tokens)."""
        try:
            self._conditional(
                "update_item",
                Key={"pk": self._pk(config.agent_id), "sk": {"S": _CONFIG_SK}},
                UpdateExpression="SET tokens = :tokens",
                ConditionExpression="version = :v",
                ExpressionAttributeValues={
                    ":v": {"N": str(config.version)},
                    ":tokens": _serialize(tokens.model_dump()),
                },
            )
        except ConfigConflict:
            return False
        return True

    def delete_config(self, agent_id: str) -> None:
        try:
            _dynamodb().delete_item(
                TableName=self.table, Key={"pk": self._pk(agent_id), "sk": {"S": _CONFIG_SK}}
            )
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error

    def try_lock(self, agent_id: str, holder: str, lease_seconds: int) -> bool:
        """Take the agent's token-refresh lock unless another holder's lease is running."""
        now = int(time.time())
        item = _to_item(
            {
                "pk": f"AGENT#{agent_id}",
                "sk": _LOCK_SK,
                "holder": holder,
                "lease_until": now + lease_seconds,
                "expires_at": now + lease_seconds + 3600,  # TTL sweeps a crashed holder's
            }
        )
        try:
            self._conditional(
                "put_item",
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except ConfigConflict:
            return False
        return True

    def unlock(self, agent_id: str, holder: str) -> None:
        # A failed condition: the lease ran out and another holder has it, theirs to release.
        with contextlib.suppress(ConfigConflict):
            self._conditional(
                "delete_item",
                Key={"pk": self._pk(agent_id), "sk": {"S": _LOCK_SK}},
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )

    def _conditional(self, operation: str, **kwargs: Any) -> None:
        _conditional(self.table, operation, **kwargs)


class AuthorizationStore:
    """Started OAuth authorizations, keyed by a hash of their state: a table reader cannot
    use what it reads, and each one can be taken exactly once."""

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
        try:
            _dynamodb().put_item(TableName=self.table, Item=item)
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error

    def take(self, state_hash: str) -> PendingAuthorization | None:
        """Remove and return it in one atomic step, so a replayed state finds nothing."""
        try:
            response = _dynamodb().delete_item(
                TableName=self.table, Key=self._key(state_hash), ReturnValues="ALL_OLD"
            )
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error
        item = response.get("Attributes")
        if not item:
            return None
        document = json.loads(item["document"]["S"])
        return PendingAuthorization(**document, expires_at=int(item["expires_at"]["N"]))


def owner_partition(org_id: str, client_org_id: str | None = None) -> str:
    """The partition of an organization, or of one of its client organizations (ids cannot
    contain '#')."""
    org = f"ORG#{org_id}"
    return f"{org}#CLIENT_ORG#{client_org_id}" if client_org_id else org


class OrgStore:
    """What organizations share with their agents: client organizations (their email
    policy) and shared OAuth apps."""

    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    def agent_context(
        self, org_id: str, client_org_id: str | None
    ) -> tuple[dict[tuple[AppOwner, str], SharedApp], ClientOrg | None]:
        """The shared apps an agent may inherit and its client organization: one round trip."""
        partitions = [owner_partition(org_id)]
        if client_org_id:
            partitions.append(owner_partition(org_id, client_org_id))
        keys = [
            {"pk": {"S": partition}, "sk": {"S": f"{_APP_SK}{provider}"}}
            for partition in partitions
            for provider in _PROVIDERS
        ]
        if client_org_id:
            keys.append({"pk": {"S": partitions[1]}, "sk": {"S": _CLIENT_ORG_SK}})
        try:
            response = _dynamodb().batch_get_item(
                RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
            )
            items = response["Responses"].get(self.table, [])
            # A handful of small items: unprocessed keys only under throttling; retry once.
            unprocessed = response.get("UnprocessedKeys", {}).get(self.table)
            if unprocessed:
                retry = _dynamodb().batch_get_item(RequestItems={self.table: unprocessed})
                items += retry["Responses"].get(self.table, [])
                unprocessed = retry.get("UnprocessedKeys", {}).get(self.table)
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error
        if unprocessed:
            # A missing policy or app would read as "none": a policy check let through.
            raise _unavailable("DynamoDB")
        apps: dict[tuple[AppOwner, str], SharedApp] = {}
        client_org = None
        for item in items:
            values = _from_item(item)
            kind = values.pop("sk")
            del values["pk"]
            if kind == _CLIENT_ORG_SK:
                client_org = ClientOrg.model_validate(values)
            else:
                app = SharedApp.model_validate(values)
                apps[(app.owner, app.provider)] = app
        return apps, client_org

    def _get(self, partition: str, sort_key: str) -> dict[str, Any] | None:
        try:
            response = _dynamodb().get_item(
                TableName=self.table,
                Key={"pk": {"S": partition}, "sk": {"S": sort_key}},
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error
        if "Item" not in response:
            return None
        values = _from_item(response["Item"])
        del values["pk"], values["sk"]
        return values

    def _put(
        self, partition: str, sort_key: str, record: BaseModel, replaces_version: int | None
    ) -> None:
        item = _to_item({"pk": partition, "sk": sort_key, **record.model_dump(mode="json")})
        _conditional(self.table, "put_item", Item=item, **_version_condition(replaces_version))

    def _delete(self, partition: str, sort_key: str) -> None:
        try:
            _dynamodb().delete_item(
                TableName=self.table, Key={"pk": {"S": partition}, "sk": {"S": sort_key}}
            )
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error

    def get_app(self, org_id: str, client_org_id: str | None, provider: str) -> SharedApp | None:
        values = self._get(owner_partition(org_id, client_org_id), f"{_APP_SK}{provider}")
        return SharedApp.model_validate(values) if values else None

    def put_app(self, app: SharedApp, *, replaces_version: int | None) -> None:
        partition = owner_partition(app.org_id, app.client_org_id)
        self._put(partition, f"{_APP_SK}{app.provider}", app, replaces_version)

    def delete_app(self, org_id: str, client_org_id: str | None, provider: str) -> None:
        self._delete(owner_partition(org_id, client_org_id), f"{_APP_SK}{provider}")

    def get(self, org_id: str, client_org_id: str) -> ClientOrg | None:
        values = self._get(owner_partition(org_id, client_org_id), _CLIENT_ORG_SK)
        return ClientOrg.model_validate(values) if values else None

    def put(self, client_org: ClientOrg, *, replaces_version: int | None) -> None:
        partition = owner_partition(client_org.org_id, client_org.client_org_id)
        self._put(partition, _CLIENT_ORG_SK, client_org, replaces_version)

    def delete(self, org_id: str, client_org_id: str) -> None:
        """The client organization with its shared apps, in one transaction."""
        partition = {"S": owner_partition(org_id, client_org_id)}
        sort_keys = [_CLIENT_ORG_SK, *(f"{_APP_SK}{provider}" for provider in _PROVIDERS)]
        try:
            _dynamodb().transact_write_items(
                TransactItems=[
                    {"Delete": {"TableName": self.table, "Key": {"pk": partition, "sk": {"S": k}}}}
                    for k in sort_keys
                ]
            )
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("DynamoDB") from error


class CounterStore:
    """Counters in calendar windows (sending limits, test rate limits)."""

    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    def count(self, kind: str, windows: list[tuple[str, Window]]) -> None:
        """Count one event in every window (each of a scope: a partition key), each only
        while below its limit.

        Each window is one conditional increment (atomic in DynamoDB), so concurrent callers
        never push a window past its limit. When one is full, the increments already made are
        given back, and `LimitReached` names the full window. (Not one transaction: moto
        restores whole tables when a transaction fails, which would lose concurrent writes
        in the tests.)
        """
        counted: list[tuple[str, Window]] = []
        try:
            for scope, window in windows:
                try:
                    self._add(scope, kind, window, 1)
                except ConfigConflict:
                    raise LimitReached(scope, window) from None
                counted.append((scope, window))
        except LimitReached:
            for scope, window in counted:
                self._add(scope, kind, window, -1)
            raise

    def _add(self, scope: str, kind: str, window: Window, amount: int) -> None:
        condition = {}
        if amount > 0:
            condition = {"ConditionExpression": "attribute_not_exists(hits) OR hits < :limit"}
        _conditional(
            self.table,
            "update_item",
            Key={"pk": {"S": scope}, "sk": {"S": f"{kind}#{window.name}#{window.key}"}},
            UpdateExpression="ADD hits :amount SET expires_at = :expires",
            ExpressionAttributeValues={
                ":amount": {"N": str(amount)},
                ":expires": {"N": str(window.ends_at + 86400)},
                **({":limit": {"N": str(window.limit)}} if amount > 0 else {}),
            },
            **condition,
        )


# Secret versions never change, so a value read once serves every later read of the same
# version in this instance: a rotated secret is a new version, read at its first use.
_VALUES_KEPT = 256
_values: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
_values_lock = threading.Lock()


def _keep(name: str, version: str, value: dict[str, Any]) -> None:
    with _values_lock:
        _values[(name, version)] = value
        while len(_values) > _VALUES_KEPT:
            _values.popitem(last=False)


class SecretStore:
    """Secrets Manager: per agent, one secret for the password or client secret and, for
    OAuth, one for the tokens (written by callbacks and refreshes, never by saves, so the
    two writers cannot overwrite each other's values); per shared app, its client secret.

    Names are fixed, so whatever a failed request leaves behind is taken over by the next
    write to that name or removed by the next delete; records pin versions, so it is never
    read in their place."""

    def name_for(self, agent_id: str) -> str:
        return f"{settings().secret_name_prefix}/agents/{agent_id}/email"

    def token_name_for(self, agent_id: str) -> str:
        return f"{settings().secret_name_prefix}/agents/{agent_id}/email-tokens"

    def shared_name_for(self, org_id: str, client_org_id: str | None, provider: str) -> str:
        owner = f"orgs/{org_id}" + (f"/client-orgs/{client_org_id}" if client_org_id else "")
        return f"{settings().secret_name_prefix}/{owner}/oauth-apps/{provider}"

    def read(self, *refs: SecretRef) -> list[dict[str, Any]]:
        """The values of these secret versions, in order, in at most one round trip when
        they are current (the usual case): BatchGetSecretValue returns current versions, and
        only a version that is not current any more is then fetched by its id."""
        with _values_lock:
            wanted = {(ref.name, ref.version) for ref in refs} - _values.keys()
        try:
            if len(wanted) > 1:
                answer = _secretsmanager().batch_get_secret_value(
                    SecretIdList=[name for name, _ in wanted]
                )
                for found in answer["SecretValues"]:
                    key = (found["Name"], found["VersionId"])
                    if key in wanted:
                        _keep(*key, json.loads(found["SecretString"]))
                        wanted.discard(key)
            for name, version in wanted:
                value = _secretsmanager().get_secret_value(SecretId=name, VersionId=version)
                _keep(name, version, json.loads(value["SecretString"]))
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                # Deleted under a record (a disconnect racing a save): no retry brings it back.
                raise Conflict(
                    "secret_missing",
                    "The stored password or client secret is gone.",
                    hint="Enter it again and save.",
                ) from None
            raise _unavailable("Secrets Manager") from error
        except BotoCoreError as error:
            raise _unavailable("Secrets Manager") from error
        with _values_lock:
            return [_values[(ref.name, ref.version)] for ref in refs]

    def write(self, name: str, value: dict[str, Any], *, exists: bool, org_id: str) -> SecretRef:
        """Create or replace the secret: the reference to the version written. `exists`
        saves a round trip when we know the secret does."""
        document = json.dumps(value)
        client = _secretsmanager()
        try:
            if exists:
                try:
                    written = client.put_secret_value(SecretId=name, SecretString=document)
                    return SecretRef(name=name, version=written["VersionId"])
                except client.exceptions.ResourceNotFoundException:
                    pass  # e.g. an agent that used a shared app until now: create it
            try:
                created = client.create_secret(
                    Name=name,
                    SecretString=document,
                    Tags=[{"Key": "mailbridge:org", "Value": org_id}],
                )
                version = created["VersionId"]
            except client.exceptions.ResourceExistsException:
                # Left behind by a request that failed half-way: take it over.
                version = client.put_secret_value(SecretId=name, SecretString=document)["VersionId"]
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("Secrets Manager") from error
        return SecretRef(name=name, version=version)

    def delete(self, name: str) -> None:
        """Delete the secret, if there is one."""
        try:
            # No recovery window: the name must be reusable at once if the agent reconnects.
            _secretsmanager().delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        except _secretsmanager().exceptions.ResourceNotFoundException:
            pass
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("Secrets Manager") from error
        with _values_lock:
            for key in [key for key in _values if key[0] == name]:
                del _values[key]
