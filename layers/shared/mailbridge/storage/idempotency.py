"""The agent's sends by Idempotency-Key, kept by Powertools' idempotency utility in the table,
in a partition of the agent's own (so deleting the agent finds them), swept by the TTL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..core.errors import ErrorCode, MailbridgeError
from ..core.observability import logger
from ..core.settings import settings
from ..mail.models import SentMessage
from .aws import dynamodb, storage_unavailable

# A retried request within a day returns the first one's result; a day is longer than any
# client retries a send.
KEY_LIFETIME_SECONDS = 24 * 3600


class PowertoolsSendRecords:
    """One invocation's: a send that crashes half-way frees its key when the invocation's
    time is up (`lambda_context`), not in a day."""

    def __init__(self, lambda_context: LambdaContext) -> None:
        self._lambda_context = lambda_context

    def once(
        self, agent_id: str, key: str, request: dict[str, Any], send: Callable[[], SentMessage]
    ) -> SentMessage:
        config = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="request",
            expires_after_seconds=KEY_LIFETIME_SECONDS,
        )
        config.register_lambda_context(self._lambda_context)
        sent_here: list[SentMessage] = []  # what this invocation sent, whatever happens after

        @idempotent_function(
            data_keyword_argument="attempt",
            persistence_store=_records(agent_id),
            config=config,
            output_serializer=PydanticSerializer(SentMessage),
            key_prefix="send",
        )
        def send_once(attempt: dict[str, Any]) -> SentMessage:
            sent_here.append(send())
            return sent_here[0]

        try:
            result: SentMessage = send_once(attempt={"key": key, "request": request})
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
            # The message left and only its result could not be recorded: answering a
            # failure would have the client send it again.
            logger.warning("sent; recording the result under the key failed")
            return sent_here[0]
        return result


def _records(agent_id: str) -> DynamoDBPersistenceLayer:
    return DynamoDBPersistenceLayer(
        table_name=settings().table_name,
        key_attr="pk",
        sort_key_attr="sk",
        static_pk_value=f"IDEMPOTENCY#{agent_id}",
        expiry_attr="expires_at",  # the table's TTL attribute
        boto3_client=dynamodb(),
    )
