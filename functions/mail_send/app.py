"""POST /bridge/agents/{agentId}/mail/send: send a message or a reply, exactly once per
Idempotency-Key, under the client organization's policy."""

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Body, Header
from mailbridge.core.observability import logger
from mailbridge.core.settings import settings
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller
from mailbridge.http.contract import MAIL_SEND, errors, jwt_with, success
from mailbridge.mail.models import SendRequest, SentMessage
from mailbridge.mail.sending import SendStores, send_message
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.audit import DynamoAuditLog
from mailbridge.storage.counters import DynamoCounterStore
from mailbridge.storage.idempotency import PowertoolsSendRecords
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore

app = create_app()
stores = SendStores(
    DynamoAgentStore(),
    SecretsManagerStore(),
    DynamoOrgStore(),
    DynamoCounterStore(),
    DynamoAuditLog(),
)
IdempotencyKey = Annotated[
    str,
    Header(
        alias="idempotency-key",
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]+$",
        description="Your unique id of this send (a UUID, say): a retry with the same key "
        "returns the first result and sends nothing.",
    ),
]


@app.post(
    "/bridge/agents/<agentId>/mail/send",
    summary="Send a message, or a reply in a message's thread",
    description="Exactly once per `Idempotency-Key`. The client organization's policy is "
    "checked before anything leaves: allowed recipients, hourly and daily limits, the "
    "sending address's domain.",
    tags=["Mail"],
    security=jwt_with(MAIL_SEND),
    responses=success("Sent.") | errors(401, 403, 404, 409, 422, 429, 502, 503),
)
def send(
    agentId: AgentId,
    request: Annotated[SendRequest, Body()],
    idempotency_key: IdempotencyKey,
) -> SentMessage:
    sent = send_message(
        stores,
        PowertoolsSendRecords(app.lambda_context),
        current_caller(app),
        agentId,
        request,
        idempotency_key=idempotency_key,
    )
    logger.info("message sent", extra={"recipients": len(sent.recipients)})
    return sent


handler = lambda_handler(app, max_body_bytes=settings().max_send_bytes)
