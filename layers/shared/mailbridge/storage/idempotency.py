"""Idempotency records of an agent's sends, kept by Powertools' DynamoDB layer in the table,
in a partition of the agent's own (so deleting the agent finds them), swept by the TTL."""

from __future__ import annotations

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from ..core.settings import settings
from .aws import dynamodb


def idempotency_records(agent_id: str) -> DynamoDBPersistenceLayer:
    return DynamoDBPersistenceLayer(
        table_name=settings().table_name,
        key_attr="pk",
        sort_key_attr="sk",
        static_pk_value=f"IDEMPOTENCY#{agent_id}",
        expiry_attr="expires_at",  # the table's TTL attribute
        boto3_client=dynamodb(),
    )
