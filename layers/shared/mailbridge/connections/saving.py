"""The Email tab's writes: saving an agent's email connection from its form (validated, its
preset resolved, its secret kept in Secrets Manager, the client organization's policy
applied), and removing it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..agents.access import load_owned_agent
from ..agents.models import Agent, Caller
from ..audit.models import Actor, AuditAction
from ..audit.service import connection_entry, record_refusal
from ..core.errors import (
    WRITE_ATTEMPTS,
    ErrorCode,
    InvalidField,
    MailbridgeError,
    StaleWrite,
    Unavailable,
    kept_changing,
    refuse_all,
)
from ..core.observability import logger
from ..core.types import PROVIDER_NAMES, SecretRef
from ..oauth.scopes import requested_scopes
from ..orgs.inherited_apps import SharedApps, available_apps
from ..orgs.records import ClientOrg
from ..orgs.sending_policy import policy_refusal, require_email_domain
from .disconnecting import disconnect
from .models import EmailConfigView
from .presets import resolve_server
from .records import (
    Connection,
    ImapConnection,
    OAuthConnection,
    ServerSettings,
    Status,
    StoredConfig,
)
from .request_models import EmailConfigRequest, ImapConfigRequest, MicrosoftConfigRequest
from .service import view

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, AuditLog, FeedStore, OrgStore, SecretStore


def _imap_connection(request: ImapConfigRequest) -> ImapConnection:
    servers: dict[str, ServerSettings] = {}
    problems: list[MailbridgeError] = []
    for protocol in ("imap", "smtp"):
        try:
            servers[protocol] = resolve_server(request.preset, protocol, getattr(request, protocol))
        except MailbridgeError as problem:  # each server's, to say them all at once
            problems.append(problem)
    refuse_all(problems)
    return ImapConnection(
        preset=request.preset,
        email=str(request.email),
        username=request.username or str(request.email),
        **servers,
    )


def _oauth_connection(
    request: EmailConfigRequest, current: StoredConfig | None, shared: SharedApps
) -> OAuthConnection:
    assert not isinstance(request, ImapConfigRequest)
    tenant = None
    if request.client_id is None:
        # Inherited by reference: the shared app (and its tenant) is resolved at each use.
        if not any(reference.provider == request.provider for reference in available_apps(shared)):
            raise InvalidField(
                "client_id",
                f"client_id is required: no shared {PROVIDER_NAMES[request.provider]} app is "
                "registered.",
                hint="Enter the app's client ID and secret, or ask an admin to register one.",
            )
    elif isinstance(request, MicrosoftConfigRequest):
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


def _secret_still_applies(current: StoredConfig | None, new: Connection) -> bool:
    """Whether the stored secret may go with the new settings: a password only to the
    servers and login it was saved for (else anyone who may edit the settings could send it
    to a server of theirs); a client secret only with its client ID."""
    if current is None or current.secret is None or current.connection.provider != new.provider:
        return False
    old = current.connection
    if isinstance(new, OAuthConnection):
        assert isinstance(old, OAuthConnection)
        return old.client_id == new.client_id
    assert isinstance(old, ImapConnection)
    return (old.username, old.imap.host, old.smtp.host) == (
        new.username,
        new.imap.host,
        new.smtp.host,
    )


def save_email_config(
    agents: AgentStore,
    secrets: SecretStore,
    orgs: OrgStore,
    log: AuditLog,
    caller: Caller,
    agent_id: str,
    request: EmailConfigRequest,
    expected_version: int | None = None,
) -> EmailConfigView:
    """Save; with `expected_version` (If-Match) only over that version, else last writer
    wins (re-applying the full request over whatever is there, never a torn record)."""
    if isinstance(request, ImapConfigRequest):
        field, secret_key, secret = "password", "password", request.password
    else:
        field, secret_key, secret = "client_secret", "client_secret", request.client_secret
    # An empty secret means "keep the stored one", as the Email tab's field says.
    secret_value = secret.get_secret_value() if secret else ""
    written: SecretRef | None = None  # the new secret: written once, whatever the retries
    wrote = False
    # A save re-reads and re-applies on a concurrent write: the request is a full
    # replacement, so re-applying it gives "last writer wins", never a torn record.
    for _ in range(WRITE_ATTEMPTS):
        try:
            agent, current = load_owned_agent(agents, caller, agent_id)
        except MailbridgeError as gone:
            if wrote and gone.code == ErrorCode.AGENT_NOT_FOUND:
                # Removed meanwhile, perhaps after its removal deleted its secrets: what
                # this save wrote must not outlive it.
                secrets.delete(secrets.name_for(agent_id))
            raise
        if expected_version is not None and expected_version != (current.version if current else 0):
            raise MailbridgeError(
                ErrorCode.VERSION_MISMATCH,
                "The configuration changed since you loaded it.",
                hint="Reload to see the current settings, then save again.",
            )
        shared, client_org = orgs.agent_context(agent.org_id, agent.client_org_id)
        refused = _refused_by_policy(agent, client_org, request)
        if refused is not None:
            code, refusal = refused
            saving = AuditAction.CONNECTION_SAVED
            record_refusal(log, agent, Actor.of(caller), saving, code, refusal)
            raise refusal
        # Every problem of the request at once, so that a form marks each field.
        problems: list[MailbridgeError] = []
        connection: Connection | None = None
        try:
            if isinstance(request, ImapConfigRequest):
                connection = _imap_connection(request)
            else:
                connection = _oauth_connection(request, current, shared)
        except MailbridgeError as problem:
            if problem.field is None:
                raise
            problems.append(problem)
        inherits = isinstance(connection, OAuthConnection) and connection.client_id is None
        if inherits and secret_value:
            problems.append(
                InvalidField(
                    "client_secret",
                    "A client secret goes with a client ID; leave both out to use the shared app.",
                )
            )
        kept = (
            current.secret
            if current and connection and _secret_still_applies(current, connection)
            else None
        )
        # Settings refused: only a new connection is sure to need its secret.
        needs_secret = current is None if connection is None else not inherits and kept is None
        if not secret_value and needs_secret:
            problems.append(
                InvalidField(
                    field,
                    f"{field} is required for a new connection, or a new server or login.",
                    # Said only where one is stored: why it is asked for again.
                    hint="A stored secret is only ever sent where it was saved for."
                    if current is not None and current.secret is not None
                    else None,
                )
            )
        refuse_all(problems)
        assert connection is not None
        if secret_value and written is None:
            written = secrets.write(
                secrets.name_for(agent_id),
                {secret_key: secret_value},
                exists=current is not None and current.secret is not None,
                org_id=agent.org_id,
                agent_id=agent_id,
            )
            wrote = True
        record = _next_record(agent, current, connection, None if inherits else written or kept)
        try:
            agents.put_config(
                record,
                replaces_version=current.version if current else None,
                org_id=agent.org_id,
                entry=connection_entry(
                    agent, Actor.of(caller), AuditAction.CONNECTION_SAVED, current, record
                ),
            )
        except StaleWrite:
            # Whatever changed may have been a disconnect, which deleted what we wrote.
            written = None
            continue
        if current is not None:
            _discard_unused(secrets, current, record)
        return view(agent, record, shared, client_org)
    raise kept_changing("configuration")


def _refused_by_policy(
    agent: Agent, client_org: ClientOrg | None, request: EmailConfigRequest
) -> tuple[ErrorCode, MailbridgeError] | None:
    """What the client organization's policy refuses of the request, and why, for the
    audit trail: the organization deleted since the agent was registered, or an address
    outside its domain (named by its field). (A sign-in's address is checked at the
    callback.)"""
    gone = policy_refusal(agent, client_org, [])
    if gone is not None:
        return gone.code, gone
    if not isinstance(request, ImapConfigRequest):
        return None
    try:
        require_email_domain(client_org, str(request.email), "email")
        if request.username and "@" in request.username:
            # A login that is an address is the mailbox's own: the same rule holds.
            require_email_domain(client_org, request.username, "username")
    except InvalidField as outside:
        return ErrorCode.EMAIL_DOMAIN_NOT_ALLOWED, outside
    return None


def _next_record(
    agent: Agent,
    current: StoredConfig | None,
    connection: Connection,
    secret: SecretRef | None,
) -> StoredConfig:
    now = datetime.now(UTC)
    version = (current.version if current else agent.last_config_version) + 1
    new_secret = secret is not None and (current is None or secret != current.secret)
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
            "secret": secret,
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
        agent_id=agent.agent_id,
        connection=connection,
        secret=secret,
        secret_updated_at=now if new_secret or current is None else current.secret_updated_at,
        status=Status.AWAITING_AUTHORIZATION if oauth else Status.CONFIGURED,
        version=version,
        updated_at=now,
    )


def _discard_unused(secrets: SecretStore, before: StoredConfig, after: StoredConfig) -> None:
    """Delete what the saved record stopped using: the tokens of an app the agent left, its
    own client secret once it inherits. Best effort: the save stands, and anything left is
    at the agent's fixed names, for its next authorization, save or disconnect."""
    unused = [
        ref.name
        for ref, still in ((before.tokens, after.tokens), (before.secret, after.secret))
        if ref is not None and still is None
    ]
    for name in unused:
        try:
            secrets.delete(name)
        except Unavailable as error:
            logger.warning("unused secret left for later", extra={"error_code": error.code})


def delete_email_config(
    agents: AgentStore,
    secrets: SecretStore,
    orgs: OrgStore,
    feeds: FeedStore,
    caller: Caller,
    agent_id: str,
) -> EmailConfigView:
    """Disconnect: revoke where the provider allows, then forget the configuration and its
    secrets. Deleting what is already gone succeeds, so a retry after a failure half-way
    finishes the job."""
    agent, current = load_owned_agent(agents, caller, agent_id)
    disconnect(agents, secrets, orgs, feeds, agent, current, Actor.of(caller))
    shared, client_org = orgs.agent_context(agent.org_id, agent.client_org_id)
    return view(agent, None, shared, client_org)
