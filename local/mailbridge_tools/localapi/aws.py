"""The AWS the functions reach, embedded: moto's server on loopback (DynamoDB, Secrets
Manager), the environment that points every boto3 client there, and the template's table."""

from __future__ import annotations

import logging
import os
import threading
from contextlib import ExitStack
from typing import Any

import boto3
from moto.dynamodb.responses import DynamoHandler
from moto.server import ThreadedMotoServer

from ..template import create_table

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
PARTITION = "aws"


def table_arn(table_name: str) -> str:
    return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table_name}"


def start_aws(stack: ExitStack, template: dict[str, Any], table_name: str) -> str:
    """Starts moto until `stack` closes, points this process at it and creates the template's
    table there as `table_name`; the endpoint's URL."""
    # moto's access log would interleave with the API's own, in the same format.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    stack.callback(moto.stop)
    _one_dynamodb_request_at_a_time()
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
