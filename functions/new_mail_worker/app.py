"""The new-mail worker: one look per queued mailbox (SQS, in batches). A batch's looks run
at once: each mostly waits on its mail server, and Lambda bills the invocation's duration,
so a batch costs about what its slowest look does. A failed look is reported alone (the
batch's others stand), tried again by SQS, then kept in the dead-letter queue."""

import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailbridge.core.deadline import Deadline
from mailbridge.core.errors import MailbridgeError
from mailbridge.core.lifecycle import freeze_long_lived
from mailbridge.core.observability import log_unexpected, logger, metrics
from mailbridge.core.settings import settings
from mailbridge.newmail.models import SyncRequest
from mailbridge.newmail.service import FeedStores, look_for_new_mail
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.newmail import DynamoFeedStore, EventBridgeBus, SqsSyncQueue
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore

settings()
stores = FeedStores(
    DynamoAgentStore(),
    SecretsManagerStore(),
    DynamoOrgStore(),
    DynamoFeedStore(),
    EventBridgeBus(),
    SqsSyncQueue(),
)
# SQS's largest batch, the template's BatchSize: every look of a batch at once.
_looks = ThreadPoolExecutor(max_workers=10, thread_name_prefix="look")
# What the invocation keeps, after its looks' exchanges, to report the batch's outcome.
_REPORT_SECONDS = 3.0


def look(body: str) -> int | None:
    """How many messages the look announced; None if it failed (logged by its error code
    alone: SQS and the logs see nothing else of it)."""
    try:
        request = SyncRequest.model_validate_json(body)
        logger.thread_safe_append_keys(agent_id=request.agent_id)
        return look_for_new_mail(stores, request)
    except MailbridgeError as failure:
        logger.warning("look failed", extra={"error_code": failure.code})
    except Exception as error:
        log_unexpected(error)
    finally:
        logger.thread_safe_clear_keys()
    return None


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event["Records"]
    budget = context.get_remaining_time_in_millis() / 1000 - _REPORT_SECONDS
    with Deadline(budget):
        # Each look in a copy of this context: under the invocation's deadline.
        running = [
            _looks.submit(contextvars.copy_context().run, look, record["body"])
            for record in records
        ]
        outcomes = [future.result() for future in running]
    announced = sum(outcome for outcome in outcomes if outcome is not None)
    metrics.add_metric(name="NewMailAnnounced", unit=MetricUnit.Count, value=announced)
    failed = [
        r["messageId"] for r, outcome in zip(records, outcomes, strict=True) if outcome is None
    ]
    if failed:
        metrics.add_metric(name="NewMailLooksFailed", unit=MetricUnit.Count, value=len(failed))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


freeze_long_lived()
