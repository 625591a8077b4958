"""OAuth sign-in: authorize and re-authorize (JWT), and the providers' public callback."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from mailbridge.api import AgentId, create_app, current_caller, lambda_handler, logger, tracer
from mailbridge.models import AuthorizeRequest, AuthorizeResponse
from mailbridge.oauth import authorize, complete_authorization
from mailbridge.oauth_page import render_callback_page
from mailbridge.storage import AgentStore, AuthorizationStore, OrgStore, SecretStore

app = create_app()
agents, secrets, states, orgs = AgentStore(), SecretStore(), AuthorizationStore(), OrgStore()


def _start(agent_id: str, request: AuthorizeRequest | None, *, consent: bool) -> AuthorizeResponse:
    origin = (request.origin if request else None) or app.current_event.headers.get("origin")
    caller = current_caller(app)
    return authorize(agents, states, orgs, caller, agent_id, origin, consent=consent)


@app.post("/bridge/agents/<agentId>/email-config/authorize")
@tracer.capture_method
def authorize_account(
    agentId: AgentId, request: Annotated[AuthorizeRequest | None, Body()] = None
) -> AuthorizeResponse:
    return _start(agentId, request, consent=False)


@app.post("/bridge/agents/<agentId>/email-config/reauthorize")
@tracer.capture_method
def reauthorize_account(
    agentId: AgentId, request: Annotated[AuthorizeRequest | None, Body()] = None
) -> AuthorizeResponse:
    return _start(agentId, request, consent=True)


@app.get("/api/engine/oauth/callback")
@tracer.capture_method
def oauth_callback() -> Response[str]:
    query = dict(app.current_event.query_string_parameters or {})
    outcome = complete_authorization(agents, states, secrets, orgs, query)
    error = outcome.message.error
    logger.info(
        "oauth callback",
        extra={
            "agent_id": outcome.message.agentId,
            "status": outcome.message.status,
            "error_code": error.code if error else None,
        },
    )
    page, headers = render_callback_page(outcome)
    return Response(
        status_code=outcome.http_status,
        content_type="text/html; charset=utf-8",
        body=page,
        headers=headers,
    )


handler = lambda_handler(app)
