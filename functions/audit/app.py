"""GET the audit trail: an agent's, and its organization's (admins only)."""

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from mailbridge.audit.history import agent_history, org_history
from mailbridge.audit.history_models import AuditPage, HistoryQuery, UtcTime
from mailbridge.core.types import ID_PATTERN, OPAQUE_ID_PATTERN
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller
from mailbridge.http.contract import JWT, errors, success
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.audit import DynamoAuditLog
from pydantic.json_schema import SkipJsonSchema

app = create_app()
agents, log = DynamoAgentStore(), DynamoAuditLog()
TAGS = ["Audit trail"]
HISTORY = success("Entries, newest first, and the next page's cursor.") | errors(
    401, 403, 404, 422, 503
)
Since = Annotated[
    UtcTime | SkipJsonSchema[None],
    Query(description="Entries at or after this time (ISO 8601 with its offset)."),
]
Until = Annotated[
    UtcTime | SkipJsonSchema[None], Query(description="Entries at or before this time.")
]
Cursor = Annotated[
    str | SkipJsonSchema[None],
    Query(pattern=OPAQUE_ID_PATTERN, description="The previous page's `next_cursor`."),
]
Limit = Annotated[int, Query(ge=1, le=100, description="At most this many.")]


@app.get(
    "/bridge/agents/<agentId>/email-history",
    summary="Who changed the agent's connection, and when: saves, sign-ins, tests, "
    "disconnects, refusals by policy",
    tags=TAGS,
    security=JWT,
    responses=HISTORY,
)
def get_agent_history(
    agentId: AgentId,
    since: Since = None,
    until: Until = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> AuditPage:
    query = HistoryQuery(since=since, until=until, cursor=cursor, limit=limit)
    return agent_history(agents, log, current_caller(app), agentId, query)


@app.get(
    "/bridge/orgs/<orgId>/email-history",
    summary="Every change of the organization's connections, shared apps and policies",
    tags=TAGS,
    security=JWT,
    responses=HISTORY,
)
def get_org_history(
    orgId: Annotated[str, Path(pattern=ID_PATTERN)],
    since: Since = None,
    until: Until = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> AuditPage:
    query = HistoryQuery(since=since, until=until, cursor=cursor, limit=limit)
    return org_history(log, current_caller(app), orgId, query)


handler = lambda_handler(app)
