"""GET /bridge/email-discovery: the provider, connection method and servers an address's
domain calls for, for the Email tab to propose as the address is typed."""

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Query
from mailbridge.core.observability import logger
from mailbridge.discovery.models import EmailDiscovery
from mailbridge.discovery.service import discover_email_settings
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import current_caller
from mailbridge.http.contract import JWT, errors, success
from mailbridge.storage.counters import DynamoCounterStore
from mailbridge.storage.discovery import DynamoDiscoveryCache

app = create_app()
cache, counters = DynamoDiscoveryCache(), DynamoCounterStore()


@app.get(
    "/bridge/email-discovery",
    summary="The provider, method and servers an address's domain calls for, with sources",
    tags=["Email connection"],
    security=JWT,
    responses=success("What was found; `other` and no servers when nothing was.")
    | errors(401, 403, 422, 429, 503),
)
def discover_settings(
    email: Annotated[
        str, Query(max_length=320, description="The address to connect, e.g. jane@acme.com.")
    ],
) -> EmailDiscovery:
    found = discover_email_settings(cache, counters, current_caller(app), email)
    # The domain only: the address's local part is the person's, and stays out of the logs.
    logger.info(
        "email settings discovered",
        extra={
            "domain": found.domain,
            "provider": found.provider.id,
            "unanswered": found.unanswered,
        },
    )
    return found


handler = lambda_handler(app)
