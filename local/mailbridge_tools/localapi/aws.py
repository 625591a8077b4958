"""The AWS the functions reach, embedded: moto's server on loopback (DynamoDB, Secrets
Manager, SQS, EventBridge), the environment that points every boto3 client there, and the
template's table, queues and event buses."""

from __future__ import annotations

import copy
import logging
import os
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, cast

import boto3
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.server import ThreadedMotoServer

from ..template import create_table, event_bus_names, queue_attributes, queue_ids, queue_properties

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

    # A queue's attributes by SQS's names (the template's properties of the same names).
    QueueAttributes = dict[QueueAttributeNameType, str]

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
PARTITION = "aws"


def table_arn(table_name: str) -> str:
    return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table_name}"


def queue_arn(queue_name: str) -> str:
    return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}"


def event_bus_arn(bus_name: str) -> str:
    return f"arn:{PARTITION}:events:{REGION}:{ACCOUNT_ID}:event-bus/{bus_name}"


# Set once the queues exist: they name one another's ARNs.
_REDRIVE_ATTRIBUTES = ("RedrivePolicy", "RedriveAllowPolicy")


def create_queues(
    client: SQSClient, template: dict[str, Any], stack_name: str, resolved: dict[str, str]
) -> dict[str, str]:
    """Creates the template's SQS queues, each named by its QueueName or, as CloudFormation
    names it without the random suffix, `<stack_name>-<logical id>`; adds to `resolved` what
    the template may refer to: the queue (its URL), `.Arn` and `.QueueName`. Their URLs, by
    logical id."""
    names = {}
    for logical_id in queue_ids(template):
        properties = queue_properties(template, logical_id)
        name = properties.get("QueueName") or f"{stack_name}-{logical_id}"
        if properties.get("FifoQueue") in (True, "true") and not name.endswith(".fifo"):
            name += ".fifo"
        names[logical_id] = name
        resolved[f"{logical_id}.Arn"] = queue_arn(name)
        resolved[f"{logical_id}.QueueName"] = name
    urls: dict[str, str] = {}
    redrives: dict[str, QueueAttributes] = {}
    for logical_id, name in names.items():
        attributes = cast("QueueAttributes", queue_attributes(template, logical_id, resolved))
        redrive = {key: attributes.pop(key) for key in _REDRIVE_ATTRIBUTES if key in attributes}
        url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        resolved[logical_id] = urls[logical_id] = url
        if redrive:
            redrives[url] = redrive
    for url, redrive in redrives.items():
        client.set_queue_attributes(QueueUrl=url, Attributes=redrive)
    return urls


def create_event_buses(
    client: EventBridgeClient, template: dict[str, Any], resolved: dict[str, str]
) -> list[str]:
    """Creates the template's EventBridge buses; adds to `resolved` the bus (its name),
    `.Arn` and `.Name`. Their names."""
    names = event_bus_names(template, resolved)
    for logical_id, name in names.items():
        client.create_event_bus(Name=name)
        resolved[logical_id] = resolved[f"{logical_id}.Name"] = name
        resolved[f"{logical_id}.Arn"] = event_bus_arn(name)
    return list(names.values())


def start_aws(stack: ExitStack, template: dict[str, Any], table_name: str) -> str:
    """Starts moto until `stack` closes, points this process at it and creates the template's
    table there as `table_name`; the endpoint's URL."""
    # moto's access log would interleave with the API's own, in the same format.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    stack.callback(moto.stop)
    _one_dynamodb_request_at_a_time()
    _transactions_copy_only_their_items()
    host, port = moto.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    set_env(stack, "AWS_ENDPOINT_URL", endpoint_url)
    # Lambda sets both; botocore reads the second.
    set_env(stack, "AWS_REGION", REGION)
    set_env(stack, "AWS_DEFAULT_REGION", REGION)
    # Never real credentials for a fake AWS; existing ones are left alone.
    set_env(stack, "AWS_ACCESS_KEY_ID", "local", overwrite=False)
    set_env(stack, "AWS_SECRET_ACCESS_KEY", "local", overwrite=False)
    client = boto3.client("dynamodb")
    try:
        create_table(client, table_name, template)
    finally:
        client.close()
    return endpoint_url


def _one_dynamodb_request_at_a_time() -> None:
    """moto's TransactWriteItems is not atomic: it copies the tables first and, when the
    transaction is cancelled, puts the copies back, undoing whatever other requests wrote
    meanwhile. DynamoDB's transactions are atomic; taking moto's DynamoDB requests one at a
    time makes them so here too (concurrent requests still run concurrently everywhere
    else). For the whole process: every moto server in it shares the same backends."""
    handler = DynamoHandler.call_action
    if getattr(handler, "one_at_a_time", False):
        return
    lock = threading.Lock()

    def call_action(self: DynamoHandler) -> Any:
        with lock:
            return handler(self)

    call_action.one_at_a_time = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def _transactions_copy_only_their_items() -> None:
    """moto's TransactWriteItems deep-copies every table it names, to put the copy back if
    the transaction is cancelled: with the thousands of items a test run writes, each
    transaction took a tenth of a second and more. Here it keeps the items it names instead,
    and puts those back (requests are one at a time, see above)."""
    original = DynamoDBBackend.transact_write_items
    if getattr(original, "item_rollback", False):
        return

    class TablesUncopied:
        """`copy` as moto's DynamoDB backend sees it: its tables are not copied."""

        @staticmethod
        def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    dynamodb_models.copy = TablesUncopied  # type: ignore[attr-defined,assignment]

    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        kept = []
        for request in transact_items:
            kind, operation = next(iter(request.items()))
            table = self.get_table(operation["TableName"])
            if kind == "Put":
                names = (table.hash_key_attr, table.range_key_attr)
                key = {name: operation["Item"][name] for name in names if name is not None}
            else:
                key = operation["Key"]
            hash_key, range_key = self.get_keys_value(table, key)
            item = table.get_item(hash_key, range_key)
            kept.append((table, hash_key, range_key, copy.deepcopy(item)))
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in kept:
                table.delete_item(hash_key, range_key)
                if item is not None:
                    table.put_item(item.to_json()["Attributes"])
            raise

    transact_write_items.item_rollback = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def set_env(stack: ExitStack, name: str, value: str, *, overwrite: bool = True) -> None:
    """Sets an environment variable until `stack` closes."""
    previous = os.environ.get(name)
    if previous is not None and not overwrite:
        return
    os.environ[name] = value
    if previous is None:
        stack.callback(os.environ.pop, name, None)
    else:
        stack.callback(os.environ.__setitem__, name, previous)
