"""GET, PUT and DELETE /bridge/agents/{agentId}/email-config."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponseHeader
from mailbridge.connections.models import EmailConfigRequest, EmailConfigView
from mailbridge.connections.service import get_email_config
from mailbridge.core.observability import logger
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller, parse_if_match
from mailbridge.http.contract import JWT, errors, success
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.orgs import DynamoOrgStore
from pydantic.json_schema import SkipJsonSchema

app = create_app()
agents, orgs = DynamoAgentStore(), DynamoOrgStore()
PATH = "/bridge/agents/<agentId>/email-config"
TAGS = ["Email connection"]
ETAG: dict[str, OpenAPIResponseHeader] = {
    "ETag": {
        "description": "The configuration's version, for `If-Match`; absent while there is none.",
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    }
}


def _with_etag(view: EmailConfigView) -> Response[EmailConfigView]:
    # The version is the ETag: a PUT with If-Match fails (412) if someone saved since.
    headers = {"ETag": f'"{view.version}"'} if view.version is not None else {}
    return Response(200, content_types.APPLICATION_JSON, view, headers)


@app.get(
    PATH,
    summary="The agent's connection without secrets: status, last error, last test, banners",
    tags=TAGS,
    security=JWT,
    responses=success("The connection; `config` is null when there is none.", headers=ETAG)
    | errors(401, 404, 422, 503),
)
def get_config(agentId: AgentId) -> Response[EmailConfigView]:
    return _with_etag(get_email_config(agents, orgs, current_caller(app), agentId))


@app.put(
    PATH,
    summary="Save the connection: validate, resolve the preset, keep the secret in Secrets Manager",
    tags=TAGS,
    security=JWT,
    responses=success("The saved connection, as GET returns it.", headers=ETAG)
    | errors(401, 404, 409, 412, 422, 503),
)
def put_config(
    agentId: AgentId,
    request: Annotated[EmailConfigRequest, Body()],
    if_match: Annotated[str | SkipJsonSchema[None], Header(alias="if-match")] = None,
) -> Response[EmailConfigView]:
    # The writes load their use case and stores at the first write: a GET, the Email tab's
    # first call, starts without them.
    from mailbridge.connections.saving import save_email_config
    from mailbridge.storage.audit import DynamoAuditLog
    from mailbridge.storage.secrets import SecretsManagerStore

    caller = current_caller(app)
    expected = parse_if_match(if_match)
    secrets, log = SecretsManagerStore(), DynamoAuditLog()
    saved = save_email_config(agents, secrets, orgs, log, caller, agentId, request, expected)
    logger.info("email config saved", extra={"status": saved.status, "version": saved.version})
    return _with_etag(saved)


@app.delete(
    PATH,
    summary="Disconnect: revoke where the provider can, remove the configuration and secrets",
    tags=TAGS,
    security=JWT,
    responses=success("The agent, now without a connection.") | errors(401, 404, 422, 503),
)
def delete_config(agentId: AgentId) -> EmailConfigView:
    from mailbridge.connections.saving import delete_email_config  # as in put_config
    from mailbridge.storage.newmail import DynamoFeedStore
    from mailbridge.storage.secrets import SecretsManagerStore

    secrets, feeds = SecretsManagerStore(), DynamoFeedStore()
    deleted = delete_email_config(agents, secrets, orgs, feeds, current_caller(app), agentId)
    logger.info("email config deleted")
    return deleted


handler = lambda_handler(app)
