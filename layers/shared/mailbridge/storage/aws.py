"""The AWS clients, built once per Lambda instance and reused, and the one place their
failures (after botocore's own retries) become the service's `storage_unavailable`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..core.errors import ErrorCode, StaleWrite, Unavailable
from ..core.lifecycle import freeze_long_lived

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

# Standard retries with backoff, and timeouts well inside an API Gateway request.
BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5
)
serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize
Client = TypeVar("Client")


def _kept(client: Client) -> Client:
    """A client made at first use and kept for the instance's life, frozen with its service
    model: tens of thousands of objects no collection need scan again (8 ms for the young
    generations' collection that follows the first one, where a request makes two)."""
    freeze_long_lived()
    return client


@cache
def dynamodb() -> DynamoDBClient:
    return _kept(boto3.client("dynamodb", config=BOTO_CONFIG))


@cache
def secretsmanager() -> SecretsManagerClient:
    return _kept(boto3.client("secretsmanager", config=BOTO_CONFIG))


@cache
def events() -> EventBridgeClient:
    return _kept(boto3.client("events", config=BOTO_CONFIG))


@cache
def sqs() -> SQSClient:
    return _kept(boto3.client("sqs", config=BOTO_CONFIG))


def storage_unavailable(service: str) -> Unavailable:
    return Unavailable(
        ErrorCode.STORAGE_UNAVAILABLE,
        f"{service} did not answer; the request did not complete.",
        hint="Retry in a few seconds: a retry finishes whatever this one left undone.",
        retry_after=2,
    )


@contextmanager
def storage_errors(service: str) -> Iterator[None]:
    """Whatever the block's AWS calls fail with is `storage_unavailable`: the caller may
    retry, and what is stored is wholly the old or the new state."""
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise storage_unavailable(service) from error


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item; None values are left out (absent attributes read back as None)."""
    return {key: serialize(value) for key, value in values.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item's attributes, without its keys."""
    values = {key: _deserialize(value) for key, value in item.items()}
    del values["pk"], values["sk"]
    return values


def version_condition(replaces_version: int | None) -> dict[str, Any]:
    """Write only over that version (None: only if nothing is there yet)."""
    if replaces_version is None:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {
        "ConditionExpression": "version = :v",
        "ExpressionAttributeValues": {":v": {"N": str(replaces_version)}},
    }


def conditional_write(table: str, operation: str, **kwargs: Any) -> None:
    """A conditional write; a failed condition is `StaleWrite`.

    botocore retries a write whose answer was lost, and if the first attempt was applied the
    retry fails its own condition: a put finding exactly the item it writes is that case,
    and a success."""
    with storage_errors("DynamoDB"):
        try:
            getattr(dynamodb(), operation)(
                TableName=table, ReturnValuesOnConditionCheckFailure="ALL_OLD", **kwargs
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise  # storage_errors answers it
            if operation == "put_item" and error.response.get("Item") == kwargs["Item"]:
                return
            raise StaleWrite from None
