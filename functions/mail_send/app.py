"""POST /bridge/agents/{agentId}/mail/send: send a message or a reply, exactly once per
Idempotency-Key, under the client organization's policy."""

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Body, Header
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from mailbridge.core.errors import ErrorCode, MailbridgeError
from mailbridge.core.observability import logger
from mailbridge.core.settings import settings
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller
from mailbridge.http.contract import MAIL_SEND, errors, jwt_with, success
from mailbridge.mail.models import SendRequest, SentMessage
from mailbridge.mail.service import Stores, send_message
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.aws import storage_unavailable
from mailbridge.storage.counters import DynamoCounterStore
from mailbridge.storage.idempotency import idempotency_records
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore

app = create_app()
stores = Stores(DynamoAgentStore(), SecretsManagerStore(), DynamoOrgStore(), DynamoCounterStore())
# A retried request within a day returns the first one's result; a day is longer than any
# client retries a send.
KEY_LIFETIME_SECONDS = 24 * 3600
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
    caller = current_caller(app)
    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="request",
        expires_after_seconds=KEY_LIFETIME_SECONDS,
    )
    # A crash in the middle frees the key when this invocation's time is up, not in a day.
    config.register_lambda_context(app.lambda_context)
    sent_here: list[SentMessage] = []  # what this invocation sent, whatever happens after

    @idempotent_function(
        data_keyword_argument="attempt",
        persistence_store=idempotency_records(agentId),
        config=config,
        output_serializer=PydanticSerializer,
        key_prefix="send",
    )
    def send_once(attempt: dict[str, object]) -> SentMessage:
        sent = send_message(stores, caller, agentId, request, idempotency_key=idempotency_key)
        sent_here.append(sent)
        return sent

    attempt = {"key": idempotency_key, "request": request.model_dump(mode="json")}
    try:
        sent: SentMessage = send_once(attempt=attempt)
    except IdempotencyValidationError:
        raise MailbridgeError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This Idempotency-Key was used for another message.",
            field="Idempotency-Key",
            hint="Use a new key for each message.",
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise MailbridgeError(
            ErrorCode.REQUEST_IN_PROGRESS,
            "A send with this Idempotency-Key is still in progress.",
            hint="Retry in a few seconds: you get its result.",
            retry_after=2,
        ) from None
    except IdempotencyPersistenceLayerError as error:
        if not sent_here:
            raise storage_unavailable("DynamoDB") from error
        # The message left and only its result could not be recorded: answering a failure
        # would have the client send it again.
        logger.warning("sent; recording the result under the key failed")
        sent = sent_here[0]
    logger.info("message sent", extra={"recipients": len(sent.recipients)})
    return sent


handler = lambda_handler(app, max_body_bytes=settings().max_send_bytes)
