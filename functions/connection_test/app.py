"""POST /bridge/agents/{agentId}/email-config/test: test the saved connection.

A failed mailbox check is a 200 with `ok: false`: the request did its job (it ran the test
and recorded the outcome), and the UI needs the per-check details either way. 4xx/5xx are
kept for requests that could not run a test at all.
"""

from aws_lambda_powertools.metrics import MetricUnit
from mailbridge.connections.checks import run_connection_test
from mailbridge.connections.models import ConnectionTestResponse
from mailbridge.core.observability import logger, metrics
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller
from mailbridge.http.contract import JWT, errors, success
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.counters import DynamoCounterStore
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore

app = create_app()
agents, secrets = DynamoAgentStore(), SecretsManagerStore()
orgs, counters = DynamoOrgStore(), DynamoCounterStore()


@app.post(
    "/bridge/agents/<agentId>/email-config/test",
    summary="Test the saved connection and record the outcome as the agent's status",
    tags=["Email connection"],
    security=JWT,
    responses=success("The test ran: `ok` says whether the mailbox passed.")
    | errors(401, 404, 409, 422, 429, 503),
)
# Named for the route's last segment: the name is its OpenAPI operation id, which clients
# may use, so it stays although it reads like a test.
def test_config(
    agentId: AgentId,
) -> ConnectionTestResponse:
    caller = current_caller(app)
    result = run_connection_test(agents, secrets, orgs, counters, caller, agentId)
    failures = {check.name: check.error.code for check in result.checks if check.error}
    logger.info("connection tested", extra={"ok": result.ok, "failures": failures})
    metrics.add_metric(
        name="ConnectionTestPassed" if result.ok else "ConnectionTestFailed",
        unit=MetricUnit.Count,
        value=1,
    )
    return result


handler = lambda_handler(app)
