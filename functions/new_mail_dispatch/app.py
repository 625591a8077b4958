"""The scheduler's rounds of new mail: every connected mailbox of a provider, queued for the
worker. EventBridge Scheduler invokes it with its schedule's input: `{"provider": "imap"}`
every NewMailPollRate (Google's too while Gmail push is off), and `"google"` and
`"microsoft"` every PushCatchUpRate, to catch up on lost notifications and renew
subscriptions near their end."""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailbridge.core.lifecycle import freeze_long_lived
from mailbridge.core.observability import logger, metrics
from mailbridge.core.settings import settings
from mailbridge.newmail.models import Round
from mailbridge.newmail.service import queue_connected_mailboxes
from mailbridge.storage.newmail import DynamoFeedStore, SqsSyncQueue

settings()
feeds, queue = DynamoFeedStore(), SqsSyncQueue()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    # The schedule's input is the stack's own: one that does not parse is a deployment
    # mistake, and fails the invocation.
    round_ = Round.model_validate(event)
    queued = queue_connected_mailboxes(feeds, queue, round_)
    metrics.add_dimension(name="provider", value=round_.provider)
    metrics.add_metric(name="MailboxesQueued", unit=MetricUnit.Count, value=queued)
    logger.info("mailboxes queued", extra={"provider": round_.provider, "queued": queued})
    return {"queued": queued}


freeze_long_lived()
