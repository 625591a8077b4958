"""The AWS clients, built once per Lambda instance and reused, and the one place their
failures (after botocore's own retries) become the service's `storage_unavailable`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
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
_Client = TypeVar("_Client")
_making = threading.Lock()


def _kept(make: Callable[[], _Client]) -> Callable[[], _Client]:
    """`make`'s client, made at its first use and kept for the instance's life, then frozen
    with its service model (`core.lifecycle.freeze_long_lived`): some 30,000 objects for
    the first client (the session, the endpoints, DynamoDB's model), 2,000 to 3,500 for
    each later one, that no collection need scan again.

    Made once, under one lock, whichever threads ask first (new mail's looks and sends run
    in threads): a second client made meanwhile would be frozen, and never collected.
    boto3's default session, which the first one makes, is not to be shared while made."""
    made: list[_Client] = []

    @wraps(make)
    def client() -> _Client:
        if not made:
            with _making:
                if not made:
                    new_client = make()
                    freeze_long_lived()
                    made.append(new_client)  # others take it once it is frozen
        return made[0]

    return client


@_kept
def dynamodb() -> DynamoDBClient:
    return boto3.client("dynamodb", config=BOTO_CONFIG)


@_kept
def secretsmanager() -> SecretsManagerClient:
    return boto3.client("secretsmanager", config=BOTO_CONFIG)


@_kept
def events() -> EventBridgeClient:
    return boto3.client("events", config=BOTO_CONFIG)


@_kept
def sqs() -> SQSClient:
    return boto3.client("sqs", config=BOTO_CONFIG)


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


def query_pages(table: str, **query: Any) -> Iterator[list[dict[str, Any]]]:
    """The items a Query finds, a page at a time."""
    with storage_errors("DynamoDB"):
        for page in dynamodb().get_paginator("query").paginate(TableName=table, **query):
            yield page["Items"]


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
