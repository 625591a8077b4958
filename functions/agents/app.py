"""PUT and DELETE /bridge/agents/{agentId}: the platform registers its agents and removes
them, with everything this service keeps for them."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from mailbridge.agents.models import Agent
from mailbridge.agents.registry import AgentRequest, delete_agent, register_agent
from mailbridge.core.observability import logger
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller
from mailbridge.http.contract import AGENTS_MANAGE, errors, jwt_with, success
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.newmail import DynamoFeedStore
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore

app = create_app()
agents, secrets, orgs = DynamoAgentStore(), SecretsManagerStore(), DynamoOrgStore()
feeds = DynamoFeedStore()
PATH = "/bridge/agents/<agentId>"
TAGS = ["Agents"]
MANAGE = jwt_with(AGENTS_MANAGE)


@app.put(
    PATH,
    summary="Register an agent in the token's organization, or update it",
    tags=TAGS,
    security=MANAGE,
    responses=success("The agent.") | errors(401, 403, 404, 422, 503),
)
def put_agent(agentId: AgentId, request: Annotated[AgentRequest, Body()]) -> Agent:
    agent = register_agent(agents, orgs, current_caller(app), agentId, request)
    logger.info("agent registered", extra={"client_org_id": agent.client_org_id})
    return agent


@app.delete(
    PATH,
    summary="Remove an agent: revoke its grant, delete its connection, secrets and records",
    description="Succeeds when the agent is already gone.",
    tags=TAGS,
    security=MANAGE,
    responses=success("Deleted.", status=204) | errors(401, 403, 404, 422, 503),
)
def remove_agent(agentId: AgentId) -> Response[str]:
    delete_agent(agents, secrets, orgs, feeds, current_caller(app), agentId)
    logger.info("agent deleted")
    return Response(status_code=204, body="")


handler = lambda_handler(app)
