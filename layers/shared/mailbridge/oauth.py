"""OAuth connections: starting an authorization, finishing it at the public callback, and the
one path that hands out access tokens, refreshing them when needed.

Nothing about a flow lives in process memory: a started authorization is a DynamoDB item
keyed by the hash of its random state, taken (deleted) atomically by the callback.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets as random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .access import load_owned_agent
from .deadline import seconds_left
from .errors import AppError, ConfigConflict, Conflict, InvalidField, ServiceUnavailable
from .models import (
    Agent,
    AuthorizeResponse,
    Caller,
    LastError,
    OAuthAuthorization,
    OAuthConnection,
    OAuthResultError,
    OAuthResultMessage,
    PendingAuthorization,
    Problem,
    Status,
    StoredConfig,
    TokenRef,
)
from .oauth_providers import (
    REFRESH_MARGIN_SECONDS,
    OAuthApp,
    ProviderProblem,
    TokenGrant,
    missing_permissions,
    permission_problem,
    provider_client,
    requested_scopes,
)
from .sending_policy import require_email_domain
from .settings import settings
from .shared_apps import ResolvedApp, find_app, load_app, resolve_app

if TYPE_CHECKING:
    from .storage import AgentStore, AuthorizationStore, OrgStore, SecretStore

STATE_TTL_SECONDS = 600
_STATE_FORMAT = re.compile(r"^[A-Za-z0-9_-]{43,128}$")  # what token_urlsafe(32) produces
# A refresh is a few provider calls, each bounded by the provider timeout.
_LOCK_LEASE_SECONDS = 30
_LOCK_WAIT_SECONDS = 10
_DESCRIPTION_LIMIT = 300


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def oauth_connection(config: StoredConfig | None) -> OAuthConnection:
    if config is None:
        raise Conflict(
            "not_configured",
            "This agent has no email configuration.",
            hint="Save a Microsoft or Google OAuth configuration first.",
        )
    if not isinstance(config.connection, OAuthConnection):
        raise Conflict(
            "not_oauth",
            "This agent connects with a password; there is nothing to authorize.",
            hint="Save a Microsoft or Google OAuth configuration to use OAuth.",
        )
    return config.connection


def oauth_app(app: ResolvedApp, secret: dict[str, Any] | None = None) -> OAuthApp:
    """The app as an adapter needs it; without its secret for what needs none."""
    client_secret = secret["client_secret"] if secret else ""
    return OAuthApp(app.provider, app.client_id, client_secret, app.tenant)


# ---- starting -------------------------------------------------------------------------


def authorize(
    agents: AgentStore,
    states: AuthorizationStore,
    orgs: OrgStore,
    caller: Caller,
    agent_id: str,
    origin: str | None,
    *,
    consent: bool,
) -> AuthorizeResponse:
    """The provider's sign-in URL for the popup. `consent` (re-authorize) asks again for the
    current scope set, for an account that was authorized before."""
    agent, config = load_owned_agent(agents, caller, agent_id)
    connection = oauth_connection(config)
    assert config is not None
    if consent and connection.authorization is None:
        raise Conflict(
            "not_authorized",
            "This agent has not been authorized yet, so there is nothing to re-authorize.",
            hint="Click Authorize.",
        )
    if not settings().public_base_url:
        raise ServiceUnavailable(
            "oauth_not_configured",
            "OAuth is not set up on this deployment.",
            hint="The operator sets the stack's PublicBaseUrl parameter.",
        )
    ui_origin = (origin or "").rstrip("/")
    if not ui_origin:
        raise InvalidField("origin", "origin is required (or an Origin header).")
    if ui_origin not in settings().allowed_ui_origins:
        raise InvalidField(
            "origin",
            "This origin may not receive OAuth results.",
            hint="The operator lists UI origins in the stack's AllowedUiOrigins parameter.",
        )
    # Tokens granted to another app are no obstacle: authorizing replaces them.
    app = find_app(orgs, agent, config)
    if app is None:
        missing = ProviderProblem("oauth_app_missing", connection.provider).problem
        raise Conflict(missing.code, missing.message, hint=missing.hint)
    state = random.token_urlsafe(32)
    try:
        # Microsoft's sign-in starts with its authority's metadata, fetched here.
        url, flow = provider_client(connection.provider).start(
            oauth_app(app), state, consent=consent
        )
    except ProviderProblem as failure:
        problem = failure.problem
        if failure.code == "tenant_unknown":
            raise InvalidField("tenant", problem.message, hint=problem.hint) from None
        # The provider failed, not the request: 502 with the classified code.
        raise AppError(problem.code, problem.message, hint=problem.hint, status=502) from None
    expires_at = int(time.time()) + STATE_TTL_SECONDS
    states.put(
        state_hash(state),
        PendingAuthorization(
            agent_id=agent_id,
            org_id=agent.org_id,
            provider=connection.provider,
            config_version=config.version,
            ui_origin=ui_origin,
            scopes=requested_scopes(connection.provider),
            consent=consent,
            flow=flow,
            expires_at=expires_at,
        ),
    )
    return AuthorizeResponse(
        authorization_url=url, expires_at=datetime.fromtimestamp(expires_at, UTC)
    )


# ---- finishing ------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackOutcome:
    """What the callback page shows, and the one origin it may post it to (None: it was
    not a callback we started, so nothing is posted anywhere)."""

    message: OAuthResultMessage
    ui_origin: str | None
    http_status: int = 200
    hint: str | None = None  # shown on the page, for whoever reads it


def _failed(
    problem: Problem, pending: PendingAuthorization | None, http_status: int = 200
) -> CallbackOutcome:
    return CallbackOutcome(
        message=OAuthResultMessage(
            agentId=pending.agent_id if pending else None,
            provider=pending.provider if pending else None,
            status="error",
            error=OAuthResultError(code=problem.code, message=problem.message),
        ),
        ui_origin=pending.ui_origin if pending else None,
        http_status=http_status,
        hint=problem.hint,
    )


_UNKNOWN_STATE = Problem(
    code="state_invalid",
    message="This sign-in link is not valid: it was already used, has expired, or was not "
    "started here.",
    hint="Close this window and click Authorize again in the Email tab.",
)
_EXPIRED_STATE = Problem(
    code="state_expired",
    message="The sign-in took longer than 10 minutes.",
    hint="Click Authorize again in the Email tab.",
)
_OUTDATED = Problem(
    code="authorization_outdated",
    message="The email settings of this agent changed during the sign-in.",
    hint="Click Authorize again in the Email tab.",
)


def _provider_description(response: dict[str, str]) -> str:
    """The provider's own words, when it sent any: printable, and short."""
    description = "".join(ch for ch in response.get("error_description", "") if ch.isprintable())
    return f": {description[:_DESCRIPTION_LIMIT]}" if description else ""


def _record_failure(agents: AgentStore, config: StoredConfig, problem: Problem) -> None:
    last_error = LastError(**problem.model_dump(), at=datetime.now(UTC))
    agents.update_status(
        config.model_copy(update={"status": Status.ERROR, "last_error": last_error})
    )


def complete_authorization(
    agents: AgentStore,
    states: AuthorizationStore,
    secrets: SecretStore,
    orgs: OrgStore,
    response: dict[str, str],
) -> CallbackOutcome:
    """Handle the provider's redirect (`response` is its query string). Always a page for
    the popup, storage failures included."""
    state = response.get("state", "")
    try:
        pending = states.take(state_hash(state)) if _STATE_FORMAT.fullmatch(state) else None
    except ServiceUnavailable as down:
        # Nothing was taken: the same link works once storage answers again.
        problem = Problem(code=down.code, message=down.message, hint="Reload this window.")
        return _failed(problem, None, http_status=503)
    if pending is None:
        return _failed(_UNKNOWN_STATE, None, http_status=400)
    try:
        return _finish_authorization(agents, secrets, orgs, pending, response)
    except ServiceUnavailable as down:
        problem = Problem(code=down.code, message=down.message, hint=_OUTDATED.hint)
        return _failed(problem, pending, http_status=503)


def _finish_authorization(
    agents: AgentStore,
    secrets: SecretStore,
    orgs: OrgStore,
    pending: PendingAuthorization,
    response: dict[str, str],
) -> CallbackOutcome:
    if pending.expires_at < time.time():
        return _failed(_EXPIRED_STATE, pending, http_status=400)
    agent, config = agents.load(pending.agent_id)
    if (
        agent is None
        or agent.org_id != pending.org_id
        or config is None
        or config.version != pending.config_version
        or not isinstance(config.connection, OAuthConnection)
    ):
        return _failed(_OUTDATED, pending, http_status=409)

    try:
        if "error" in response:
            code = "authorization_denied" if response["error"] == "access_denied" else ""
            raise ProviderProblem(
                code or "authorization_failed",
                pending.provider,
                detail=_provider_description(response),
            )
        shared, client_org = orgs.agent_context(agent.org_id, agent.client_org_id)
        app = resolve_app(config, shared)
        if app is None:
            raise ProviderProblem("oauth_app_missing", pending.provider)
        client = provider_client(pending.provider)
        (app_secret,) = secrets.read(app.secret)
        account = client.finish(oauth_app(app, app_secret), pending.flow, response)
        mailbox = client.mailbox(account.grant.access_token)
        try:
            require_email_domain(client_org, mailbox.email, "email")
        except InvalidField as outside:
            # Refused before any token is stored.
            raise ProviderProblem(
                "email_domain_not_allowed", pending.provider, detail=outside.message
            ) from None
    except ProviderProblem as failure:
        _record_failure(agents, config, failure.problem)
        return _failed(failure.problem, pending)

    grant = account.grant
    assert grant.tokens is not None
    # Pinned by version: should the record write below fail, the record keeps the tokens
    # it had, and this version is simply never read.
    written = secrets.write(
        secrets.token_name_for(pending.agent_id),
        grant.tokens,
        exists=config.tokens is not None,
        org_id=agent.org_id,
    )
    missing = missing_permissions(pending.provider, grant.granted_scopes)
    problem = permission_problem(pending.provider, missing).problem if missing else None
    now = datetime.now(UTC)
    authorization = OAuthAuthorization(
        email=mailbox.email,
        granted_scopes=grant.granted_scopes,
        authorized_at=now,
        client_id=app.client_id,
        tenant_id=account.tenant_id,
    )
    record = config.model_copy(
        update={
            "connection": config.connection.model_copy(
                update={"authorization": authorization, "scopes": pending.scopes}
            ),
            "tokens": TokenRef(**written.model_dump(), expires_at=grant.expires_at),
            "status": Status.ERROR if problem else Status.CONNECTED,
            "last_error": LastError(**problem.model_dump(), at=now) if problem else None,
            "version": config.version + 1,
            "updated_at": now,
        }
    )
    try:
        agents.put_config(record, replaces_version=config.version)
    except ConfigConflict:  # a save won the race; it decides what happens next
        return _failed(_OUTDATED, pending, http_status=409)
    if problem:
        return _failed(problem, pending)
    return CallbackOutcome(
        message=OAuthResultMessage(
            agentId=pending.agent_id,
            provider=pending.provider,
            status="connected",
            email=mailbox.email,
        ),
        ui_origin=pending.ui_origin,
    )


# ---- using ----------------------------------------------------------------------------


def _due(tokens: TokenRef) -> bool:
    return tokens.expires_at - time.time() <= REFRESH_MARGIN_SECONDS


def fresh_access_token(
    agents: AgentStore, secrets: SecretStore, orgs: OrgStore, agent: Agent, config: StoredConfig
) -> TokenGrant:
    """An access token valid for at least REFRESH_MARGIN_SECONDS more: the only refresh path.

    The record says when the access token expires, so a refresh is known to be due before
    anything is read. A refresh holds the agent's lock in DynamoDB and re-reads the record
    under it: concurrent invocations never spend one refresh token twice, and each refreshed
    token document is recorded, pinned by version, before the lock is released.
    """
    connection = oauth_connection(config)
    if config.tokens is None or connection.authorization is None:
        raise Conflict(
            "not_authorized",
            "This agent's account has not been authorized yet.",
            hint="Click Authorize in the Email tab.",
        )
    app = load_app(orgs, agent, config)
    client = provider_client(connection.provider)
    if not _due(config.tokens):
        grant = client.cached_token(secrets.read(config.tokens)[0])
        if grant is not None:
            return grant
    holder = str(uuid.uuid4())
    deadline = time.monotonic() + seconds_left(_LOCK_WAIT_SECONDS)
    try:
        while not agents.try_lock(config.agent_id, holder, _LOCK_LEASE_SECONDS):
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    "token_refresh_busy",
                    "Another request is refreshing this agent's access token.",
                    hint="Retry in a few seconds.",
                    retry_after=2,
                )
            time.sleep(0.2)
        # The previous holder may have refreshed: its tokens are the ones to use.
        _, latest = agents.load(config.agent_id)
        if latest is None or latest.version != config.version or latest.tokens is None:
            raise Conflict(
                "concurrent_update",
                "The email settings of this agent changed meanwhile.",
                hint="Test the connection again.",
            )
        if not _due(latest.tokens):
            grant = client.cached_token(secrets.read(latest.tokens)[0])
            if grant is not None:
                return grant
        tokens, app_secret = secrets.read(latest.tokens, app.secret)
        grant = client.refresh(oauth_app(app, app_secret), tokens)
        assert grant.tokens is not None
        written = secrets.write(latest.tokens.name, grant.tokens, exists=True, org_id=agent.org_id)
        # Until this is recorded, the record keeps the previous tokens: a failure leaves it
        # on a refresh token the provider still honours (Microsoft keeps a used one valid;
        # Google does not rotate them).
        agents.update_tokens(latest, TokenRef(**written.model_dump(), expires_at=grant.expires_at))
        return grant
    finally:
        # Also when taking the lock failed: it may have been taken with only the answer
        # lost. Best effort: the lease ends an unreleased lock anyway.
        with contextlib.suppress(ServiceUnavailable):
            agents.unlock(config.agent_id, holder)
