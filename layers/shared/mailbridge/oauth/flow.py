"""A sign-in: starting it (the popup's URL) and finishing it at the public callback.

Nothing about a flow lives in process memory: a started authorization is a DynamoDB item
keyed by the hash of its random state, taken (deleted) atomically by the callback.
"""

from __future__ import annotations

import hashlib
import re
import secrets as random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from ..agents.access import load_owned_agent
from ..agents.models import Agent, Caller
from ..audit.models import Actor, AuditAction
from ..audit.service import connection_entry, record_refusal
from ..connections.records import (
    LastError,
    OAuthAuthorization,
    OAuthConnection,
    Problem,
    Status,
    StoredConfig,
    TokenRef,
)
from ..core.errors import (
    ErrorCode,
    InvalidField,
    MailbridgeError,
    ProviderError,
    StaleWrite,
    Unavailable,
)
from ..core.observability import logger
from ..core.settings import settings
from ..newmail.models import SyncReason, SyncRequest
from ..orgs.inherited_apps import find_app, marked_secret, resolve_app
from ..orgs.sending_policy import require_email_domain
from .models import AuthorizeResponse, OAuthResultError, OAuthResultMessage, PendingAuthorization
from .providers import AuthorizedAccount, OAuthApp, provider_client
from .scopes import grant_problems, requested_scopes
from .tokens import oauth_connection, revoke_tokens, secret_refused

if TYPE_CHECKING:
    from ..storage.protocols import (
        AgentStore,
        AuditLog,
        AuthorizationStore,
        OrgStore,
        SecretStore,
        SyncQueue,
    )

STATE_TTL_SECONDS = 600
_STATE_FORMAT = r"^[A-Za-z0-9_-]{43,128}$"  # what token_urlsafe(32) produces
_DESCRIPTION_LIMIT = 300


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


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
    switch_account: bool = False,
) -> AuthorizeResponse:
    """The provider's sign-in URL for the popup. `consent` (re-authorize) asks again for the
    current scope set, for an account that was authorized before; `switch_account` lets
    another account than the connected one replace it."""
    agent, config = load_owned_agent(agents, caller, agent_id)
    connection = oauth_connection(config)
    assert config is not None
    if consent and connection.authorization is None:
        raise MailbridgeError(
            ErrorCode.NOT_AUTHORIZED,
            "This agent has not been authorized yet, so there is nothing to re-authorize.",
            hint="Click Authorize.",
        )
    if not settings().public_base_url:
        raise Unavailable(
            ErrorCode.OAUTH_NOT_CONFIGURED,
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
        raise ProviderError(ErrorCode.OAUTH_APP_MISSING, connection.provider)
    refused = marked_secret(app)
    if refused is not None:  # the sign-in's code exchange would be refused
        raise refused
    state = random.token_urlsafe(32)
    try:
        # Microsoft's sign-in starts with its authority's metadata, fetched here: an outage
        # is the answer, and an unknown tenant is the request's `tenant` field at fault.
        url, flow = provider_client(connection.provider).start(
            OAuthApp.of(app), state, consent=consent
        )
    except ProviderError as failure:
        if failure.code == ErrorCode.TENANT_UNKNOWN:
            raise InvalidField("tenant", failure.message, hint=failure.hint) from None
        raise
    expires_at = int(time.time()) + STATE_TTL_SECONDS
    states.put(
        state_hash(state),
        PendingAuthorization(
            agent_id=agent_id,
            org_id=agent.org_id,
            provider=connection.provider,
            config_version=config.version,
            client_id=app.client_id,
            ui_origin=ui_origin,
            scopes=requested_scopes(connection.provider),
            consent=consent,
            switch_account=switch_account,
            started_by=Actor.of(caller),
            flow=flow,
            expires_at=expires_at,
        ),
    )
    return AuthorizeResponse(
        authorization_url=url, expires_at=datetime.fromtimestamp(expires_at, UTC)
    )


# ---- finishing ------------------------------------------------------------------------


class CallbackOutcome(NamedTuple):
    """What the callback page shows, and the one origin it may post it to (None: it was
    not a callback we started, so nothing is posted anywhere)."""

    message: OAuthResultMessage
    ui_origin: str | None
    hint: str | None = None  # shown on the page, for whoever reads it
    # Why the callback itself was refused (an unknown or expired state, settings changed
    # meanwhile, storage down); None when the sign-in ran to its end, connected or not.
    refusal: ErrorCode | None = None


def _failed(
    error: MailbridgeError,
    pending: PendingAuthorization | None,
    *,
    refused: bool = False,
    email: str | None = None,
) -> CallbackOutcome:
    return CallbackOutcome(
        message=OAuthResultMessage(
            agentId=pending.agent_id if pending else None,
            provider=pending.provider if pending else None,
            status="error",
            email=email,
            error=OAuthResultError(code=error.code, message=error.message),
        ),
        ui_origin=pending.ui_origin if pending else None,
        hint=error.hint,
        refusal=error.code if refused else None,
    )


def _unknown_state() -> MailbridgeError:
    return MailbridgeError(
        ErrorCode.STATE_INVALID,
        "This sign-in link is not valid: it was already used, has expired, or was not "
        "started here.",
        hint="Close this window and click Authorize again in the Email tab.",
    )


def _expired_state() -> MailbridgeError:
    return MailbridgeError(
        ErrorCode.STATE_EXPIRED,
        "The sign-in took longer than 10 minutes.",
        hint="Click Authorize again in the Email tab.",
    )


_AUTHORIZE_AGAIN = "Click Authorize again in the Email tab."


def _outdated() -> MailbridgeError:
    return MailbridgeError(
        ErrorCode.AUTHORIZATION_OUTDATED,
        "The email settings of this agent changed during the sign-in.",
        hint=_AUTHORIZE_AGAIN,
    )


def _another_account(signed_in: str, connected: str) -> MailbridgeError:
    if signed_in.lower() == connected.lower():
        # A mailbox deleted and made anew, or another directory's, under the same name.
        message = (
            f"You signed in to another account named {connected} than the one this agent is "
            "connected to. Nothing was changed."
        )
    else:
        message = (
            f"You signed in as {signed_in}, but this agent is connected to {connected}. "
            "Nothing was changed."
        )
    return MailbridgeError(
        ErrorCode.ACCOUNT_MISMATCH,
        message,
        hint=f"Sign in as {connected}; or, to replace it, confirm the switch in the Email tab.",
    )


def _another_mailbox(
    before: OAuthAuthorization | None,
    account: AuthorizedAccount,
    email: str,
    pending: PendingAuthorization,
) -> bool:
    """Whether the sign-in is another mailbox than the connected one, which it may not
    replace unless the request asked to switch. An authorization recorded before accounts
    were (no account id) is judged by its address and directory; it records its account
    at this sign-in."""
    if before is None or pending.switch_account:
        return False
    if before.account_id is not None:
        return before.account_id != account.account_id
    other_directory = None not in (before.tenant_id, account.tenant_id) and (
        before.tenant_id != account.tenant_id
    )
    return before.email.lower() != email.lower() or other_directory


def _provider_description(response: dict[str, str]) -> str:
    """The provider's own words, when it sent any: printable, and short."""
    description = "".join(ch for ch in response.get("error_description", "") if ch.isprintable())
    return f": {description[:_DESCRIPTION_LIMIT]}" if description else ""


def _record_failure(
    agents: AgentStore,
    agent: Agent,
    config: StoredConfig,
    error: MailbridgeError,
    signing_in: tuple[Actor, AuditAction],
) -> None:
    last_error = LastError(**Problem.of(error).model_dump(), at=datetime.now(UTC))
    failed = config.with_status(Status.ERROR, last_error)
    entry = connection_entry(agent, *signing_in, config, failed)
    agents.update_status(failed, entry.failed(error.code, error.message))


def complete_authorization(
    agents: AgentStore,
    states: AuthorizationStore,
    secrets: SecretStore,
    orgs: OrgStore,
    queue: SyncQueue,
    log: AuditLog,
    response: dict[str, str],
) -> CallbackOutcome:
    """Handle the provider's redirect (`response` is its query string). Always a page for
    the popup, storage failures included. A connected mailbox's new mail starts at once."""
    state = response.get("state", "")
    try:
        pending = states.take(state_hash(state)) if re.fullmatch(_STATE_FORMAT, state) else None
    except Unavailable as down:
        # Nothing was taken: the same link works once storage answers again.
        reload = MailbridgeError(down.code, down.message, hint="Reload this window.")
        return _failed(reload, None, refused=True)
    if pending is None:
        return _failed(_unknown_state(), None, refused=True)
    try:
        outcome = _finish_authorization(agents, secrets, orgs, log, pending, response)
    except Unavailable as down:
        again = MailbridgeError(down.code, down.message, hint=_AUTHORIZE_AGAIN)
        return _failed(again, pending, refused=True)
    if outcome.message.status == "connected":
        _start_new_mail(queue, pending.agent_id)
    return outcome


def _start_new_mail(queue: SyncQueue, agent_id: str) -> None:
    """The connected mailbox's first look, and its push subscription, now rather than at
    the scheduler's next round. Best effort: that round is the fallback."""
    try:
        queue.send([SyncRequest(agent_id=agent_id, reason=SyncReason.CONNECTED)])
    except MailbridgeError as failure:
        logger.warning("first look left to the next round", extra={"error_code": failure.code})


def _finish_authorization(
    agents: AgentStore,
    secrets: SecretStore,
    orgs: OrgStore,
    log: AuditLog,
    pending: PendingAuthorization,
    response: dict[str, str],
) -> CallbackOutcome:
    if pending.expires_at < time.time():
        return _failed(_expired_state(), pending, refused=True)
    agent, config = agents.load(pending.agent_id)
    if (
        agent is None
        or agent.deleting
        or agent.org_id != pending.org_id
        or config is None
        or config.version != pending.config_version
        or not isinstance(config.connection, OAuthConnection)
        or config.connection.provider != pending.provider
    ):
        return _failed(_outdated(), pending, refused=True)

    before = config.connection.authorization
    # The callback has no token: the person is the one who clicked Authorize.
    signing_in = (
        pending.started_by or Actor(kind="person", subject="unknown"),
        AuditAction.REAUTHORIZED if before else AuditAction.AUTHORIZED,
    )
    shared, client_org = orgs.agent_context(agent.org_id, agent.client_org_id)
    app = resolve_app(config, shared)
    if app is not None and pending.client_id not in (None, app.client_id):
        # Begun for another app: versions start again for an agent removed and registered
        # again. Nothing of this sign-in, an error included, is the new connection's.
        return _failed(_outdated(), pending, refused=True)
    try:
        if "error" in response:
            denied = response["error"] == "access_denied"
            raise ProviderError(
                ErrorCode.AUTHORIZATION_DENIED if denied else ErrorCode.AUTHORIZATION_FAILED,
                pending.provider,
                detail=_provider_description(response),
            )
        if app is None:
            raise ProviderError(ErrorCode.OAUTH_APP_MISSING, pending.provider)
        client = provider_client(pending.provider)
        (app_secret,) = secrets.read(app.secret)
        try:
            account = client.finish(OAuthApp.of(app, app_secret), pending.flow, response)
        except ProviderError as refused:
            in_shared_app = secret_refused(orgs, app, refused)
            if in_shared_app is None:
                raise
            raise in_shared_app from refused
        mailbox = client.mailbox(account.grant.access_token)
        if _another_mailbox(before, account, mailbox.email, pending):
            # Before anything is stored: the connected mailbox stays as it was.
            # The new grant is not revoked: at Google that would end every grant of the
            # account to this app, another agent's perhaps.
            assert before is not None
            mismatch = _another_account(mailbox.email, before.email)
            record_refusal(log, agent, *signing_in, ErrorCode.ACCOUNT_MISMATCH, mismatch)
            return _failed(mismatch, pending, refused=True, email=mailbox.email)
        try:
            require_email_domain(client_org, mailbox.email, "email")
        except InvalidField as outside:
            # Refused before any token is stored.
            raise ProviderError(
                ErrorCode.EMAIL_DOMAIN_NOT_ALLOWED, pending.provider, detail=outside.message
            ) from None
    except ProviderError as failure:
        if config.status is Status.CONNECTED:
            # A re-authorization cancelled or refused: the connection works as it did.
            record_refusal(log, agent, *signing_in, failure.code, failure)
            return _failed(failure, pending)
        _record_failure(agents, agent, config, failure, signing_in)
        return _failed(failure, pending)

    grant = account.grant
    assert grant.tokens is not None
    # Pinned by version: should the record write below fail, the record keeps the tokens
    # it had, and this version is simply never read.
    written = secrets.write(
        secrets.token_name_for(pending.agent_id),
        grant.tokens,
        exists=config.tokens is not None,
        org_id=agent.org_id,
        agent_id=pending.agent_id,
    )
    # Without the permission to send, the agent is Connected and warned (at each read).
    problem, _ = grant_problems(pending.provider, grant.granted_scopes)
    now = datetime.now(UTC)
    authorization = OAuthAuthorization(
        email=mailbox.email,
        granted_scopes=grant.granted_scopes,
        authorized_at=now,
        client_id=app.client_id,
        tenant_id=account.tenant_id,
        account_id=account.account_id,
    )
    # The same account's new mail carries on; another's (a switch) starts now. One recorded
    # before accounts were is judged by its address.
    same_mailbox = before is not None and (
        before.account_id == account.account_id
        if before.account_id is not None
        else before.email.lower() == mailbox.email.lower()
    )
    # What was known of the old mailbox says nothing of the new one.
    forgotten = {} if same_mailbox else {"last_test": None, "degraded": None}
    record = config.with_status(
        Status.ERROR if problem else Status.CONNECTED,
        LastError(**Problem.of(problem).model_dump(), at=now) if problem else None,
        connection=config.connection.model_copy(
            update={"authorization": authorization, "scopes": pending.scopes}
        ),
        tokens=TokenRef(**written.model_dump(), expires_at=grant.expires_at),
        connected_at=config.connected_at if same_mailbox else None,
        version=config.version + 1,
        updated_at=now,
        **forgotten,
    )
    entry = connection_entry(agent, *signing_in, config, record)
    if problem:
        entry = entry.failed(problem.code, problem.message)
    try:
        agents.put_config(record, replaces_version=config.version, org_id=agent.org_id, entry=entry)
    except StaleWrite:
        # A save, a disconnect or a removal won the race, and decides what happens next. The
        # grant just made is revoked unless the agent's record still holds it (a save that
        # kept the app, with the agent's earlier tokens, which its secret keeps, pinned by
        # version) or another connection does (`revoke_tokens`).
        current_agent, current = agents.load(pending.agent_id)
        if current_agent is None or current_agent.deleting:
            current = None
        if current is None or current.tokens is None or current.oauth_grant != record.oauth_grant:
            revoke_tokens(agents, secrets, record)
        if current is None or current.tokens is None:
            secrets.delete(written.name)
        return _failed(_outdated(), pending, refused=True)
    if before is not None and not same_mailbox and config.tokens is not None:
        # A switch: the old mailbox is disconnected, its grant revoked where the provider
        # allows (its tokens' version is still readable). Its push lapses by itself.
        revoke_tokens(agents, secrets, config)
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
