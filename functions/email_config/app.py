"""GET, PUT and DELETE /bridge/agents/{agentId}/email-config."""

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Body
from mailbridge.api import AgentId, create_app, current_caller, lambda_handler, logger, tracer
from mailbridge.email_config import delete_email_config, get_email_config, save_email_config
from mailbridge.models import EmailConfigRequest, EmailConfigView
from mailbridge.storage import AgentStore, OrgStore, SecretStore

app = create_app()
agents, secrets, orgs = AgentStore(), SecretStore(), OrgStore()


@app.get("/bridge/agents/<agentId>/email-config")
@tracer.capture_method
def get_config(agentId: AgentId) -> EmailConfigView:
    return get_email_config(agents, orgs, current_caller(app), agentId)


@app.put("/bridge/agents/<agentId>/email-config")
@tracer.capture_method
def put_config(agentId: AgentId, request: Annotated[EmailConfigRequest, Body()]) -> EmailConfigView:
    saved = save_email_config(agents, secrets, orgs, current_caller(app), agentId, request)
    logger.info("email config saved", extra={"status": saved.status, "version": saved.version})
    return saved


@app.delete("/bridge/agents/<agentId>/email-config")
@tracer.capture_method
def delete_config(agentId: AgentId) -> EmailConfigView:
    deleted = delete_email_config(agents, secrets, orgs, current_caller(app), agentId)
    logger.info("email config deleted")
    return deleted


handler = lambda_handler(app)
