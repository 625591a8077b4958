"""GET, PUT and DELETE /bridge/agents/{agentId}/email-config."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header
from mailbridge.api import (
    AgentId,
    create_app,
    current_caller,
    lambda_handler,
    logger,
    parse_if_match,
    tracer,
)
from mailbridge.email_config import delete_email_config, get_email_config, save_email_config
from mailbridge.models import EmailConfigRequest, EmailConfigView
from mailbridge.storage import AgentStore, OrgStore, SecretStore

app = create_app()
agents, secrets, orgs = AgentStore(), SecretStore(), OrgStore()


def _with_etag(view: EmailConfigView) -> Response[EmailConfigView]:
    # The version is the ETag: a PUT with If-Match fails (412) if someone saved since.
    headers = {"ETag": f'"{view.version}"'} if view.version is not None else {}
    return Response(200, content_types.APPLICATION_JSON, view, headers)


@app.get("/bridge/agents/<agentId>/email-config")
@tracer.capture_method
def get_config(agentId: AgentId) -> Response[EmailConfigView]:
    return _with_etag(get_email_config(agents, orgs, current_caller(app), agentId))


@app.put("/bridge/agents/<agentId>/email-config")
@tracer.capture_method
def put_config(
    agentId: AgentId,
    request: Annotated[EmailConfigRequest, Body()],
    if_match: Annotated[str | None, Header(alias="if-match")] = None,
) -> Response[EmailConfigView]:
    caller = current_caller(app)
    expected = parse_if_match(if_match)
    saved = save_email_config(agents, secrets, orgs, caller, agentId, request, expected)
    logger.info("email config saved", extra={"status": saved.status, "version": saved.version})
    return _with_etag(saved)


@app.delete("/bridge/agents/<agentId>/email-config")
@tracer.capture_method
def delete_config(agentId: AgentId) -> EmailConfigView:
    deleted = delete_email_config(agents, secrets, orgs, current_caller(app), agentId)
    logger.info("email config deleted")
    return deleted


handler = lambda_handler(app)
