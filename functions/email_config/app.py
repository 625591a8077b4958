"""GET /bridge/agents/{agentId}/email-config: the Email tab's first call, in a function of its
own: it starts without what saving takes, and may read the agent's records, not write them
nor reach any secret (PUT and DELETE are in functions/email_config_write)."""

from aws_lambda_powertools.event_handler import Response
from mailbridge.connections.models import EmailConfigView
from mailbridge.connections.service import get_email_config
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller
from mailbridge.http.contract import ETAG, JWT, errors, success, with_etag
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.orgs import DynamoOrgStore

app = create_app()
agents, orgs = DynamoAgentStore(), DynamoOrgStore()


@app.get(
    "/bridge/agents/<agentId>/email-config",
    summary="The agent's connection without secrets: status, last error, last test, banners",
    tags=["Email connection"],
    security=JWT,
    responses=success("The connection; `config` is null when there is none.", headers=ETAG)
    | errors(401, 404, 422, 503),
)
def get_config(agentId: AgentId) -> Response[EmailConfigView]:
    view = get_email_config(agents, orgs, current_caller(app), agentId)
    return with_etag(view, view.version)


handler = lambda_handler(app)
