"""PUT and DELETE /bridge/agents/{agentId}/email-config: save and disconnect the agent's
connection, its secrets in Secrets Manager (GET is in functions/email_config, which reaches
no secret)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header
from mailbridge.connections.models import EmailConfigView
from mailbridge.connections.request_models import EmailConfigRequest
from mailbridge.connections.saving import delete_email_config, save_email_config
from mailbridge.core.observability import logger
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller, parse_if_match
from mailbridge.http.contract import ETAG, JWT, errors, success, with_etag
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.audit import DynamoAuditLog
from mailbridge.storage.newmail import DynamoFeedStore
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore
from pydantic.json_schema import SkipJsonSchema

app = create_app()
agents, orgs, secrets = DynamoAgentStore(), DynamoOrgStore(), SecretsManagerStore()
log, feeds = DynamoAuditLog(), DynamoFeedStore()
PATH = "/bridge/agents/<agentId>/email-config"
TAGS = ["Email connection"]


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
    caller = current_caller(app)
    expected = parse_if_match(if_match)
    saved = save_email_config(agents, secrets, orgs, log, caller, agentId, request, expected)
    logger.info("email config saved", extra={"status": saved.status, "version": saved.version})
    return with_etag(saved, saved.version)


@app.delete(
    PATH,
    summary="Disconnect: revoke where the provider can, remove the configuration and secrets",
    tags=TAGS,
    security=JWT,
    responses=success("The agent, now without a connection.") | errors(401, 404, 422, 503),
)
def delete_config(agentId: AgentId) -> EmailConfigView:
    deleted = delete_email_config(agents, secrets, orgs, feeds, current_caller(app), agentId)
    logger.info("email config deleted")
    return deleted


handler = lambda_handler(app)
