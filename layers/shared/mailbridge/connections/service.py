"""Reading, saving and removing an agent's email connection: the Email tab's form."""

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
    ProviderError,
    StaleWrite,
    Unavailable,
    kept_changing,
    refuse_all,
)
from ..core.observability import logger
from ..core.settings import settings
from ..core.types import OAUTH_PROVIDERS, PROVIDER_NAMES, OAuthProvider, SecretRef, SecretState
from ..oauth.providers import grant_problems, requested_scopes
from ..oauth.tokens import revoke_tokens
from ..orgs.models import ClientOrg
from ..orgs.sending_policy import banner, policy_refusal, require_email_domain
from ..orgs.shared_apps import (
    SharedApps,
    available_apps,
    resolve_app,
    secret_expiry,
    unusable_app,
)
from .models import (
    DeliveryView,
    EmailConfigRequest,
    EmailConfigView,
    ImapConfigRequest,
    ImapConnectionView,
    MicrosoftConfigRequest,
    OAuthConnectionView,
    OAuthSetup,
)
from .presets import resolve_server
from .records import (
    Connection,
    ImapConnection,
    LastError,
    OAuthConnection,
    Problem,
    ServerSettings,
    Status,
    StoredConfig,
)

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, AuditLog, FeedStore, OrgStore, SecretStore


def view(
    agent: Agent,
    config: StoredConfig | None,
    shared: SharedApps,
    client_org: ClientOrg | None,
) -> EmailConfigView:
    """The agent's config as the Email tab draws it, the banners' data included."""
    connection: ImapConnectionView | OAuthConnectionView | None = None
    status = config.status if config else Status.NOT_CONNECTED
    last_error = config.last_error if config else None
    if config is not None:
        secret = SecretState(set=True, updated_at=config.secret_updated_at)
        if isinstance(config.connection, ImapConnection):
            connection = ImapConnectionView(**config.connection.model_dump(), password=secret)
        else:
            app = resolve_app(config, shared)
            connection = OAuthConnectionView(
                **config.connection.model_dump(),
                client_secret=secret if config.secret else None,
                redirect_uri=settings().oauth_redirect_uri,
                app=app.reference if app else None,
            )
            # Shared apps are resolved as they are now: one deleted or replaced since the
            # last save shows at once, with nothing stored to update.
            unusable = unusable_app(config, app)
            lacking, _ = _grant_problems(config)
            if unusable is not None:
                status = Status.ERROR
                last_error = LastError(**Problem.of(unusable).model_dump(), at=datetime.now(UTC))
            elif status is Status.CONNECTED and lacking is not None:
                # Compared with what is required now: requirements grown since the sign-in
                # show on every agent at once, with nothing stored to update.
                status = Status.ERROR
                last_error = LastError(**Problem.of(lacking).model_dump(), at=datetime.now(UTC))
        # The client organization's policy as it is now: a domain set or changed since the
        # connection was saved, or the organization deleted, shows at once (and sends are
        # refused), nothing stored.
        outside = policy_refusal(agent, client_org, config.addresses)
        if outside is not None:
            status = Status.ERROR
            last_error = LastError(**Problem.of(outside).model_dump(), at=datetime.now(UTC))
    return EmailConfigView(
        agent_id=agent.agent_id,
        status=status,
        reason=last_error.code if status is Status.ERROR and last_error else _REASONS[status],
        checked_at=_checked_at(config, last_error),
        config=connection,
        last_error=last_error,
        last_test=config.last_test if config else None,
        version=config.version if config else None,
        updated_at=config.updated_at if config else None,
        shared_apps=available_apps(shared),
        client_org=banner(client_org) if client_org else None,
        delivery=_delivery(config) if status is Status.CONNECTED else None,
        warnings=_warnings(config, status, shared),
        oauth_setup=_oauth_setup(),
    )


def _oauth_setup() -> dict[OAuthProvider, OAuthSetup]:
    if not settings().public_base_url:
        return {}
    redirect_uri = settings().oauth_redirect_uri
    return {
        provider: OAuthSetup(redirect_uri=redirect_uri, scopes=requested_scopes(provider))
        for provider in OAUTH_PROVIDERS
    }


# The reason of each status that is not an error's.
_REASONS = {
    Status.NOT_CONNECTED: "not_configured",
    Status.CONFIGURED: "untested",
    Status.AWAITING_AUTHORIZATION: "authorization_required",
    Status.CONNECTED: "verified",
    Status.ERROR: "error",  # every error is recorded with its last error: never shown
}


def _checked_at(config: StoredConfig | None, last_error: LastError | None) -> datetime | None:
    """The latest of what establishes a status: a test, a sign-in, an error (recorded, or
    found at this read)."""
    if config is None:
        return None
    moments = [config.last_test.tested_at if config.last_test else None]
    moments.append(last_error.at if last_error else None)
    connection = config.connection
    if isinstance(connection, OAuthConnection) and connection.authorization is not None:
        moments.append(connection.authorization.authorized_at)
    return max((moment for moment in moments if moment is not None), default=None)


def _grant_problems(
    config: StoredConfig,
) -> tuple[ProviderError | None, ProviderError | None]:
    """What the agent's OAuth grant lacks of what is required now (see grant_problems)."""
    connection = config.connection
    if not isinstance(connection, OAuthConnection) or connection.authorization is None:
        return None, None
    return grant_problems(connection.provider, connection.authorization.granted_scopes)


def _warnings(config: StoredConfig | None, status: Status, shared: SharedApps) -> list[Problem]:
    """Every warning of the view: what works, but not fully (or not for long)."""
    warnings: list[Problem] = []
    if config is not None and status is Status.CONNECTED:
        _, cannot_send = _grant_problems(config)
        if cannot_send is not None:
            warnings.append(Problem.of(cannot_send))
    if config is not None and isinstance(config.connection, OAuthConnection):
        # The inherited app's secret near or past its recorded expiry, on every agent.
        app = resolve_app(config, shared)
        expiry = secret_expiry(app.shared, datetime.now(UTC).date()) if app and app.shared else None
        if expiry is not None:
            warnings.append(Problem(**expiry.model_dump()))
    return warnings


def _delivery(config: StoredConfig | None) -> DeliveryView:
    if config is None or config.connected_at is None:
        return DeliveryView(state="inactive")
    degraded = config.degraded
    if degraded is None:
        return DeliveryView(state="active")
    return DeliveryView(
        state="degraded",
        of=degraded.of,
        problem=degraded.problem,
        since=degraded.since,
        failures=degraded.failures,
    )


def get_email_config(
    agents: AgentStore, orgs: OrgStore, caller: Caller, agent_id: str
) -> EmailConfigView:
    agent, config = load_owned_agent(agents, caller, agent_id)
    shared, client_org = orgs.agent_context(agent.org_id, agent.client_org_id)
    return view(agent, config, shared, client_org)


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
        record = _next_record(agent_id, current, connection, None if inherits else written or kept)
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
    agent_id: str,
    current: StoredConfig | None,
    connection: Connection,
    secret: SecretRef | None,
) -> StoredConfig:
    now = datetime.now(UTC)
    version = current.version + 1 if current else 1
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
        agent_id=agent_id,
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


def disconnect(
    agents: AgentStore,
    secrets: SecretStore,
    orgs: OrgStore,
    feeds: FeedStore,
    agent: Agent,
    current: StoredConfig | None,
    actor: Actor,
    action: AuditAction = AuditAction.DISCONNECTED,
) -> None:
    """Stop the provider's push of new mail and revoke where the provider allows, then
    delete the record (with its entry: `action`, by `actor`) and the agent's secrets."""
    if current is not None:
        # Only a disconnect needs the mail feature (a push to stop): loaded here, the email
        # config's other routes start without it.
        from ..mail.service import Stores
        from ..newmail.service import stop_new_mail

        stop_new_mail(Stores(agents, secrets, orgs), feeds, agent, current)
        if current.tokens is not None:
            revoke_tokens(secrets, orgs, agent, current, current.tokens)
        # The record first: a failure after it leaves secrets nothing reads, at the agent's
        # fixed names, which the retry deletes; never a record pointing at a missing secret.
        # Over the version read, so that the entry says what was deleted; a save meanwhile
        # is deleted in its turn (its tokens are the agent's, deleted below).
        for _ in range(WRITE_ATTEMPTS):
            try:
                agents.delete_config(current, connection_entry(agent, actor, action, current, None))
                break
            except StaleWrite:
                _, current = agents.load(agent.agent_id)
                if current is None:
                    break
        else:
            raise kept_changing("configuration")
    secrets.delete(secrets.name_for(agent.agent_id))
    secrets.delete(secrets.token_name_for(agent.agent_id))
