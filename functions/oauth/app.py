"""OAuth sign-in: authorize and re-authorize (JWT), and the providers' public callback."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from mailbridge.core.observability import logger
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller
from mailbridge.http.contract import JWT, errors, html_pages, success
from mailbridge.http.errors import STATUS
from mailbridge.oauth.callback_page import render_callback_page
from mailbridge.oauth.flow import authorize, complete_authorization
from mailbridge.oauth.models import AuthorizeRequest, AuthorizeResponse
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.audit import DynamoAuditLog
from mailbridge.storage.authorizations import DynamoAuthorizationStore
from mailbridge.storage.newmail import SqsSyncQueue
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore
from pydantic.json_schema import SkipJsonSchema

app = create_app()
agents, secrets = DynamoAgentStore(), SecretsManagerStore()
states, orgs = DynamoAuthorizationStore(), DynamoOrgStore()
queue, log = SqsSyncQueue(), DynamoAuditLog()
TAGS = ["OAuth"]
STARTED_SIGN_IN = success("The provider's sign-in URL, to open in the popup.") | errors(
    401, 404, 409, 422, 502, 503
)

# What providers send back. Declared for the contract only: the domain takes the whole query,
# because MSAL reads more of it than these.
State = Annotated[str | SkipJsonSchema[None], Query(description="The sign-in URL's `state`.")]
Code = Annotated[str | SkipJsonSchema[None], Query(description="The code, on success.")]
ProviderErrorCode = Annotated[
    str | SkipJsonSchema[None], Query(description="The error, on failure.")
]
ProviderErrorText = Annotated[
    str | SkipJsonSchema[None], Query(description="The provider's words.")
]


def _start(agent_id: str, request: AuthorizeRequest | None, *, consent: bool) -> AuthorizeResponse:
    origin = (request.origin if request else None) or app.current_event.headers.get("origin")
    caller = current_caller(app)
    switch_account = request.switch_account if request else False
    return authorize(
        agents,
        states,
        orgs,
        caller,
        agent_id,
        origin,
        consent=consent,
        switch_account=switch_account,
    )


@app.post(
    "/bridge/agents/<agentId>/email-config/authorize",
    summary="Start the OAuth sign-in of the agent's account",
    tags=TAGS,
    security=JWT,
    responses=STARTED_SIGN_IN,
)
def authorize_account(
    agentId: AgentId, request: Annotated[AuthorizeRequest | None, Body()] = None
) -> AuthorizeResponse:
    return _start(agentId, request, consent=False)


@app.post(
    "/bridge/agents/<agentId>/email-config/reauthorize",
    summary="Sign in again, asking consent for the current scopes (Update Scopes)",
    tags=TAGS,
    security=JWT,
    responses=STARTED_SIGN_IN,
)
def reauthorize_account(
    agentId: AgentId, request: Annotated[AuthorizeRequest | None, Body()] = None
) -> AuthorizeResponse:
    return _start(agentId, request, consent=True)


@app.get(
    "/api/engine/oauth/callback",
    summary="The providers' redirect target: finishes the sign-in, answers the popup's page",
    description="Public: the single-use `state` is what authenticates the request.",
    tags=TAGS,
    responses=html_pages(
        {
            200: "Signed in, or refused by the provider or the policy: the page says which.",
            400: "The state is unknown, used or expired (`state_invalid`, `state_expired`).",
            409: "The agent's settings changed during the sign-in (`authorization_outdated`), "
            "or another account signed in than the one connected (`account_mismatch`: "
            "nothing changed; the Email tab offers to switch).",
            503: "Storage failed (`storage_unavailable`): the page says whether to reload it "
            "or to authorize again.",
        },
        503,
    ),
)
def oauth_callback(
    state: State = None,
    code: Code = None,
    error: ProviderErrorCode = None,
    error_description: ProviderErrorText = None,
) -> Response[str]:
    query = dict(app.current_event.query_string_parameters or {})
    outcome = complete_authorization(agents, states, secrets, orgs, queue, log, query)
    problem = outcome.message.error
    logger.info(
        "oauth callback",
        extra={
            "agent_id": outcome.message.agentId,
            "status": outcome.message.status,
            "error_code": problem.code if problem else None,
        },
    )
    page, headers = render_callback_page(outcome)
    # A sign-in that ran to its end is a page like any other, whatever it says; a refused
    # callback has its error's status.
    return Response(
        status_code=STATUS[outcome.refusal] if outcome.refusal else 200,
        content_type="text/html; charset=utf-8",
        body=page,
        headers=headers,
    )


handler = lambda_handler(app)
