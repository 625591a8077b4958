"""Reading, saving and removing an agent's email connection."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .access import load_owned_agent
from .errors import AppError, ConfigConflict, Conflict, InvalidField
from .models import (
    Caller,
    Connection,
    EmailConfigRequest,
    EmailConfigView,
    ImapConfigRequest,
    ImapConnection,
    ImapConnectionView,
    MicrosoftConfigRequest,
    OAuthConnection,
    OAuthConnectionView,
    SecretState,
    Status,
    StoredConfig,
)
from .oauth import oauth_app
from .oauth_providers import ProviderProblem, provider_client, requested_scopes
from .presets import resolve_server
from .settings import settings

if TYPE_CHECKING:
    from .storage import AgentStore, SecretStore

logger = logging.getLogger(__name__)

# A save re-reads and re-applies on a concurrent write: the request is a full replacement,
# so re-applying it gives "last writer wins" without ever writing a torn record.
_SAVE_ATTEMPTS = 3


def view(agent_id: str, config: StoredConfig | None) -> EmailConfigView:
    if config is None:
        return EmailConfigView(
            agent_id=agent_id,
            status=Status.NOT_CONNECTED,
            config=None,
            last_error=None,
            last_test=None,
            version=None,
            updated_at=None,
        )
    secret = SecretState(set=True, updated_at=config.secret_updated_at)
    connection: ImapConnectionView | OAuthConnectionView
    if isinstance(config.connection, ImapConnection):
        connection = ImapConnectionView(**config.connection.model_dump(), password=secret)
    else:
        connection = OAuthConnectionView(
            **config.connection.model_dump(),
            client_secret=secret,
            redirect_uri=settings().oauth_redirect_uri,
        )
    return EmailConfigView(
        agent_id=agent_id,
        status=config.status,
        config=connection,
        last_error=config.last_error,
        last_test=config.last_test,
        version=config.version,
        updated_at=config.updated_at,
    )


def get_email_config(agents: AgentStore, caller: Caller, agent_id: str) -> EmailConfigView:
    _, config = load_owned_agent(agents, caller, agent_id)
    return view(agent_id, config)


def _imap_connection(request: ImapConfigRequest) -> ImapConnection:
    return ImapConnection(
        preset=request.preset,
        email=str(request.email),
        username=request.username or str(request.email),
        imap=resolve_server(request.preset, "imap", request.imap),
        smtp=resolve_server(request.preset, "smtp", request.smtp),
    )


def _oauth_connection(request: EmailConfigRequest, current: StoredConfig | None) -> OAuthConnection:
    assert not isinstance(request, ImapConfigRequest)
    tenant = None
    if isinstance(request, MicrosoftConfigRequest):
        # Left out, the stored tenant is kept: a re-save never silently turns a
        # single-tenant app into a multi-tenant one.
        stored = current.connection if current else None
        tenant = request.tenant or (stored.tenant if isinstance(stored, OAuthConnection) else None)
        if tenant is None:
            raise InvalidField(
                "tenant",
                "tenant is required: the directory (tenant) ID, a verified domain, "
                "organizations or common.",
            )
    return OAuthConnection(
        provider=request.provider,
        client_id=request.client_id,
        tenant=tenant,
        scopes=requested_scopes(request.provider),
    )


def _same_app(current: Connection, new: Connection) -> bool:
    """The same mailbox server and login, or the same OAuth app: what a test or an
    authorization established still holds (given the same secret)."""
    if isinstance(current, OAuthConnection) and isinstance(new, OAuthConnection):
        return (current.provider, current.client_id, current.tenant) == (
            new.provider,
            new.client_id,
            new.tenant,
        )
    return current == new


def save_email_config(
    agents: AgentStore,
    secrets: SecretStore,
    caller: Caller,
    agent_id: str,
    request: EmailConfigRequest,
) -> EmailConfigView:
    if isinstance(request, ImapConfigRequest):
        field, secret_key, secret = "password", "password", request.password
    else:
        field, secret_key, secret = "client_secret", "client_secret", request.client_secret
    # An empty secret means "keep the stored one", as the Email tab's field says.
    secret_value = secret.get_secret_value() if secret else ""
    for _ in range(_SAVE_ATTEMPTS):
        agent, current = load_owned_agent(agents, caller, agent_id)
        if isinstance(request, ImapConfigRequest):
            connection: Connection = _imap_connection(request)
        else:
            connection = _oauth_connection(request, current)
        same_app = current is not None and _same_app(current.connection, connection)
        if not secret_value and not same_app:
            raise InvalidField(field, f"{field} is required for a new connection.")
        now = datetime.now(UTC)
        secret_name = current.secret_name if current else secrets.name_for(agent_id)
        if secret_value:
            secrets.write(
                secret_name,
                {secret_key: secret_value},
                exists=current is not None,
                org_id=agent.org_id,
            )
        record = _next_record(agent_id, current, connection, secret_name, secret_value, now)
        try:
            agents.put_config(record, replaces_version=current.version if current else None)
        except ConfigConflict:
            continue
        if current and current.token_secret_name and record.token_secret_name is None:
            # Tokens of an app this agent no longer uses.
            secrets.delete(current.token_secret_name)
        return view(agent_id, record)
    raise Conflict(
        "concurrent_update",
        "The configuration kept changing while saving it.",
        hint="Reload the page and save again.",
    )


def _next_record(
    agent_id: str,
    current: StoredConfig | None,
    connection: Connection,
    secret_name: str,
    new_secret: str,
    now: datetime,
) -> StoredConfig:
    version = current.version + 1 if current else 1
    if current is not None and _same_app(current.connection, connection):
        needs_authorization = False
        if isinstance(connection, OAuthConnection):
            assert isinstance(current.connection, OAuthConnection)
            # The account stays authorized; new scopes need the user's consent, though.
            authorization = current.connection.authorization
            connection = connection.model_copy(update={"authorization": authorization})
            needs_authorization = (
                authorization is None or current.connection.scopes != connection.scopes
            )
        if needs_authorization:
            status = Status.AWAITING_AUTHORIZATION
        elif new_secret:
            status = Status.CONFIGURED
        else:
            status = current.status
        update: dict[str, object] = {
            "connection": connection,
            "status": status,
            "version": version,
            "updated_at": now,
        }
        if new_secret:
            # A rotated password or client secret is proven by the next test, not assumed:
            # what the old one produced no longer says anything.
            update |= {"secret_updated_at": now, "last_test": None, "last_error": None}
        return current.model_copy(update=update)
    oauth = isinstance(connection, OAuthConnection)
    return StoredConfig(
        agent_id=agent_id,
        connection=connection,
        secret_name=secret_name,
        secret_updated_at=now,
        status=Status.AWAITING_AUTHORIZATION if oauth else Status.CONFIGURED,
        version=version,
        updated_at=now,
    )


def delete_email_config(
    agents: AgentStore, secrets: SecretStore, caller: Caller, agent_id: str
) -> EmailConfigView:
    _, current = load_owned_agent(agents, caller, agent_id)
    if current is None:
        return view(agent_id, None)
    if current.token_secret_name:
        _revoke(secrets, current, current.token_secret_name)
    # Record first, secrets second: a failure in between leaves unreferenced secrets at the
    # agent's fixed names, which the next save takes over, never a dangling reference.
    agents.delete_config(agent_id)
    secrets.delete(current.secret_name)
    if current.token_secret_name:
        secrets.delete(current.token_secret_name)
    return view(agent_id, None)


def _revoke(secrets: SecretStore, config: StoredConfig, token_secret: str) -> None:
    """Best effort: a provider that is down must not keep an agent connected against the
    user's will; the tokens are deleted either way."""
    assert isinstance(config.connection, OAuthConnection)
    try:
        provider_client(config.connection.provider).revoke(
            oauth_app(secrets, config, with_secret=True), secrets.read(token_secret)
        )
    except (ProviderProblem, AppError) as error:
        logger.warning("revocation at the provider failed", extra={"code": error.code})
