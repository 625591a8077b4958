"""An authorized agent's tokens: the one path that hands out access tokens (refreshing them
when due), their revocation at disconnect, and the mark a provider's refusal of a shared app's
secret leaves on that app (`secret_refused`, which sign-in applies too)."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit

from ..agents.models import Agent
from ..audit.models import SERVICE, AuditAction, AuditEntry
from ..audit.service import app_entry, connection_entry
from ..connections.records import OAuthConnection, StoredConfig, TokenRef
from ..core.deadline import seconds_left
from ..core.errors import Cause, ErrorCode, MailbridgeError, ProviderError, StaleWrite, Unavailable
from ..core.observability import logger, metrics
from ..orgs.inherited_apps import ResolvedApp, load_app
from .providers import REFRESH_MARGIN_SECONDS, OAuthApp, TokenGrant, provider_client

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, OrgStore, SecretStore

# A refresh is a few provider calls, each bounded by the provider timeout.
_LOCK_LEASE_SECONDS = 30
_LOCK_WAIT_SECONDS = 10


# What says the app's secret itself was refused (not the app's kind or existence).
_SECRET_REFUSALS = {Cause.CLIENT_SECRET_EXPIRED, Cause.CLIENT_SECRET_REFUSED}


def secret_refused(orgs: OrgStore, app: ResolvedApp, error: ProviderError) -> ProviderError | None:
    """If the provider's refusal says a shared app's secret is refused: marked on the app,
    over the version that was used (a new secret saved meanwhile wins), so every agent using
    it shows so at its next read with nothing written to them; and the error in its words."""
    if app.shared is None or error.cause not in _SECRET_REFUSALS:
        return None
    shared, now = app.shared, datetime.now(UTC)
    marked = shared.model_copy(update={"secret_expired_at": now})
    refusal = AuditAction.SHARED_APP_SECRET_REFUSED
    entry = app_entry(SERVICE, refusal, shared, marked).failed(error.code, error.message)
    try:
        with contextlib.suppress(StaleWrite):
            orgs.mark_app_secret_expired(shared, now, entry)
    except Unavailable as unmarked:  # the next refusal marks it; this one is answered
        logger.warning("shared app not marked", extra={"error_code": unmarked.code})
    cause = Cause.SHARED_APP_SECRET_REFUSED
    return ProviderError(ErrorCode.OAUTH_CLIENT_INVALID, app.provider, cause=cause)


def oauth_connection(config: StoredConfig | None) -> OAuthConnection:
    """The agent's OAuth connection, or why it has none."""
    if config is None:
        raise MailbridgeError(
            ErrorCode.NOT_CONFIGURED,
            "This agent has no email configuration.",
            hint="Save a Microsoft or Google OAuth configuration first.",
        )
    if not isinstance(config.connection, OAuthConnection):
        raise MailbridgeError(
            ErrorCode.NOT_OAUTH,
            "This agent connects with a password; there is nothing to authorize.",
            hint="Save a Microsoft or Google OAuth configuration to use OAuth.",
        )
    return config.connection


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
        raise MailbridgeError(
            ErrorCode.NOT_AUTHORIZED,
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
        # Waits growing to 0.8 s, jittered: many waiters neither write the one item in step
        # nor often (each try is a conditional write, refused or not).
        longest_wait = 0.1
        while not agents.try_lock(config.agent_id, holder, _LOCK_LEASE_SECONDS):
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(
                    ErrorCode.TOKEN_REFRESH_BUSY,
                    "Another request is refreshing this agent's access token.",
                    hint="Retry in a few seconds.",
                    retry_after=2,
                )
            longest_wait = min(0.8, 2 * longest_wait)
            time.sleep(min(left, random.uniform(0.05, longest_wait)))  # noqa: S311 (jitter)
        # The previous holder may have refreshed: its tokens are the ones to use.
        _, latest = agents.load(config.agent_id)
        if latest is None or latest.version != config.version or latest.tokens is None:
            raise _changed_meanwhile()
        if not _due(latest.tokens):
            grant = client.cached_token(secrets.read(latest.tokens)[0])
            if grant is not None:
                return grant
        tokens, app_secret = secrets.read(latest.tokens, app.secret)
        try:
            grant = client.refresh(OAuthApp.of(app, app_secret), tokens)
        except ProviderError as refused:
            # Counted: many at once (a provider down, a shared app's secret expired) is the
            # TokenRefreshFailures alarm; one is an agent's own status.
            metrics.add_metric(name="TokenRefreshFailed", unit=MetricUnit.Count, value=1)
            in_shared_app = secret_refused(orgs, app, refused)
            if in_shared_app is None:
                raise
            raise in_shared_app from refused
        assert grant.tokens is not None
        try:
            written = secrets.replace(latest.tokens.name, grant.tokens)
        except StaleWrite:  # deleted meanwhile: a disconnect, or the agent's removal
            raise _changed_meanwhile() from None
        # Until this is recorded, the record keeps the previous tokens: a failure leaves it
        # on a refresh token the provider still honours (Microsoft keeps a used one valid;
        # Google does not rotate them). Scopes withdrawn since are recorded with them: the
        # view and each use compare what is granted now with what is required.
        refreshed = TokenRef(**written.model_dump(), expires_at=grant.expires_at)
        granted = _changed_scopes(latest, grant)
        if granted is None:
            agents.update_tokens(latest, refreshed)
        else:
            agents.update_grant(latest, refreshed, granted, _grant_entry(agent, latest, granted))
        return grant
    finally:
        # Also when taking the lock failed: it may have been taken with only the answer
        # lost. Best effort: the lease ends an unreleased lock anyway.
        with contextlib.suppress(Unavailable):
            agents.unlock(config.agent_id, holder)


def _grant_entry(agent: Agent, config: StoredConfig, granted: list[str]) -> AuditEntry:
    """A grant the provider narrowed (or widened) since the sign-in, as its refresh says."""
    authorization = oauth_connection(config).authorization
    assert authorization is not None
    regranted = authorization.model_copy(update={"granted_scopes": granted})
    connection = config.connection.model_copy(update={"authorization": regranted})
    after = config.model_copy(update={"connection": connection})
    return connection_entry(agent, SERVICE, AuditAction.GRANT_CHANGED, config, after)


def _changed_scopes(config: StoredConfig, grant: TokenGrant) -> list[str] | None:
    """The scopes a refresh granted, if they differ from the recorded ones. An answer
    without `scope` says nothing of them."""
    authorization = oauth_connection(config).authorization
    assert authorization is not None  # a token was stored for it
    if not grant.granted_scopes or set(grant.granted_scopes) == set(authorization.granted_scopes):
        return None
    return grant.granted_scopes


def _changed_meanwhile() -> MailbridgeError:
    return MailbridgeError(
        ErrorCode.CONCURRENT_UPDATE,
        "The email settings of this agent changed meanwhile.",
        hint="Test the connection again.",
    )


def revoke_tokens(agents: AgentStore, secrets: SecretStore, config: StoredConfig) -> None:
    """Revoke `config`'s grant at the provider, where it offers a way to, unless another
    agent's connection holds it: at Google, revoking one agent's tokens ends the grant of
    every agent connected to the account by that app. Best effort: a provider that is down
    must not keep an agent connected against the user's will."""
    assert config.tokens is not None
    connection = oauth_connection(config)
    try:
        if agents.grant_holders(config) - {config.agent_id}:
            logger.info("grant kept: another agent's connection holds it")
            return
        (token_document,) = secrets.read(config.tokens)
        provider_client(connection.provider).revoke(token_document)
    except MailbridgeError as error:
        logger.warning("revocation at the provider failed", extra={"error_code": error.code})
