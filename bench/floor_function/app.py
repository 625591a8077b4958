"""The framework floor: what any handler of the mandated stack pays before a line of our own.
boto3, an HTTP API resolver with validation, a pydantic model, Powertools' Logger and
Metrics; its one route answers from one DynamoDB GetItem.

Deployed by the benchmark as a function of its own (handler `app.handler`): its import is
the floor's cold start, and a request to its route the floor's first request. It ends its
init as our functions do (`mailbridge.core.lifecycle.freeze_long_lived`), so that the floor is
the stack's cost, not one without a tuning that any handler could have.
"""

import gc
import os
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from pydantic import BaseModel

ROUTE_KEY = "GET /floor/{key}"


class Found(BaseModel):
    """A model, as every handler's responses have: pydantic builds its schema at creation."""

    found: bool


# Instances, as a handler module creates them: part of the cost is there.
app = APIGatewayHttpResolver(enable_validation=True)
logger = Logger()
metrics = Metrics()
TABLE_NAME = os.environ["TABLE_NAME"]


@cache
def dynamodb() -> Any:
    """Made at first use, as the layer's stores make theirs: a handler that answers without
    DynamoDB never pays for the client, and frozen with its service model, as theirs are."""
    client = boto3.client("dynamodb")
    gc.freeze()
    return client


@app.get("/floor/<key>")
def get_item(key: str) -> Found:
    answer = dynamodb().get_item(TableName=TABLE_NAME, Key={"pk": {"S": key}, "sk": {"S": key}})
    return Found(found="Item" in answer)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)


gc.freeze()  # the instance's init is over, as in our functions
