"""POST /api/engine/push/google: Gmail's news of a watched mailbox, pushed by Pub/Sub. Public
(Pub/Sub cannot carry the platform's JWT): the push's own OIDC token is what authenticates
it. Answered quickly, with a look queued for each agent of that mailbox: Pub/Sub pushes
again whatever is not answered 2xx."""

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from mailbridge.core.observability import logger
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.contract import errors, success
from mailbridge.newmail.gmail_push import accept_gmail_push
from mailbridge.storage.newmail import DynamoFeedStore, SqsSyncQueue

app = create_app()
feeds, queue = DynamoFeedStore(), SqsSyncQueue()
# A Gmail notification is two fields; Pub/Sub's envelope around it is well below this.
MAX_PUSH_BYTES = 16 * 1024
RESPONSES: dict[int, OpenAPIResponse] = success(
    "Taken: each agent of that mailbox will look at it (none: nothing to do).", status=204
) | errors(400, 401, 502, 503)
RESPONSES[400] = {
    **RESPONSES[400],
    "description": "Not Pub/Sub's push of a Gmail notification (`notification_invalid`).",
}
RESPONSES[401] = {
    **RESPONSES[401],
    "description": "No OIDC token that Google signed for the deployment's push audience and "
    "service account (`push_unauthorized`); Pub/Sub pushes it again.",
}
RESPONSES[413] = {**RESPONSES[413], "description": "The body is larger than 16 KiB."}


@app.post(
    "/api/engine/push/google",
    summary="Gmail's push of new mail, from the deployment's Pub/Sub push subscription",
    description="Public: the push's OIDC token (Google-signed, for the deployment's "
    "audience and push service account) is verified before anything else. The body is "
    "Pub/Sub's push envelope; its `message.data` is Gmail's notification in base64 "
    '(`{"emailAddress", "historyId"}`).',
    tags=["New mail"],
    responses=RESPONSES,
)
def gmail_push() -> Response[str]:
    event = app.current_event
    queued = accept_gmail_push(feeds, queue, event.headers.get("authorization"), event.decoded_body)
    logger.info("gmail push", extra={"queued": queued})
    return Response(status_code=204, body="")


handler = lambda_handler(app, max_body_bytes=MAX_PUSH_BYTES)
