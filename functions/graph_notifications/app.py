"""POST /api/engine/push/microsoft: Microsoft Graph's change and lifecycle notifications for
the subscriptions on agents' inboxes, and its validation request when it subscribes. Public
(Graph cannot carry the platform's JWT): each notification's clientState is what
authenticates it. Answered fast: Graph waits 3 seconds at most, retries what is not
answered 2xx, and throttles endpoints that are often slow."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from mailbridge.core.observability import logger
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.contract import errors
from mailbridge.newmail.graph_notifications import (
    MAX_NOTIFICATIONS,
    MAX_TOKEN_CHARACTERS,
    accept_graph_notifications,
    validation_answer,
)
from mailbridge.storage.newmail import DynamoFeedStore, SqsSyncQueue
from pydantic.json_schema import SkipJsonSchema

app = create_app()
feeds, queue = DynamoFeedStore(), SqsSyncQueue()
# A notification is well under 1 KB; Graph's batches are far smaller than this.
MAX_NOTIFICATION_BYTES = 1024 * 1024

ValidationToken = Annotated[
    str | SkipJsonSchema[None],
    Query(
        description="Graph's validation request, sent while it subscribes: answered with "
        f"this token (at most {MAX_TOKEN_CHARACTERS} characters), as text/plain.",
    ),
]
VALIDATED: OpenAPIResponse = {
    "description": "The validation request's answer: its `validationToken`.",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
TAKEN: OpenAPIResponse = {
    "description": "Taken: a look at the inbox is queued for each agent whose subscription a "
    "notification names and whose clientState it carries; the other notifications are "
    "dropped.",
    "content": {},
}
RESPONSES: dict[int, OpenAPIResponse] = {200: VALIDATED, 202: TAKEN} | errors(400, 503)
RESPONSES[400] = {
    **RESPONSES[400],
    "description": "Neither a validation request nor Graph's notifications "
    "(`notification_invalid`), or not JSON (`invalid_json`).",
}


@app.post(
    "/api/engine/push/microsoft",
    summary="Microsoft Graph's notifications of new mail in agents' inboxes",
    description="Public: each notification must carry its subscription's `clientState`. "
    "With `validationToken`, Graph's validation request (no body). Otherwise the body is "
    'Graph\'s collection of change or lifecycle notifications (`{"value": [{"subscriptionId", '
    f'"clientState", "lifecycleEvent"?, ...}}]}}`, at most {MAX_NOTIFICATIONS}).',
    tags=["New mail"],
    responses=RESPONSES,
)
def graph_notifications(validationToken: ValidationToken = None) -> Response[str]:
    body = app.current_event.decoded_body or ""
    if validationToken is not None:
        return Response(
            status_code=200,
            content_type="text/plain; charset=utf-8",
            body=validation_answer(validationToken, body),
            headers={"X-Content-Type-Options": "nosniff"},
        )
    queued = accept_graph_notifications(feeds, queue, body)
    logger.info("graph notifications", extra={"queued": queued})
    return Response(status_code=202, body="")


handler = lambda_handler(app, max_body_bytes=MAX_NOTIFICATION_BYTES)
