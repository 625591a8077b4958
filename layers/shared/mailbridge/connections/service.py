"""Reading an agent's email connection as the Email tab draws it: status, last error, last test,
banners (saving and deleting it are in `.saving`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..agents.access import load_owned_agent
from ..agents.models import Agent, Caller
from ..core.errors import ProviderError
from ..core.settings import settings
from ..core.types import OAUTH_PROVIDERS, OAuthProvider, SecretState
from ..oauth.scopes import grant_problems, requested_scopes
from ..orgs.inherited_apps import (
    SharedApps,
    available_apps,
    resolve_app,
    secret_expiry,
    unusable_app,
)
from ..orgs.models import ClientOrgBanner
from ..orgs.records import ClientOrg
from ..orgs.sending_policy import policy_refusal
from .models import (
    DeliveryView,
    EmailConfigView,
    ImapConnectionView,
    OAuthConnectionView,
    OAuthSetup,
)
from .records import ImapConnection, LastError, OAuthConnection, Problem, Status, StoredConfig

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, OrgStore


def _banner(client_org: ClientOrg) -> ClientOrgBanner:
    """The client organization's policy as the Email tab's banner says it."""
    warnings = []
    if client_org.email_domain:
        warnings.append(f"Sends only from @{client_org.email_domain} addresses.")
    if client_org.allowed_recipients:
        # A rule without "@" is a domain: written so, it does not read as an address.
        rules = [
            rule if "@" in rule else f"anyone at @{rule}"
            for rule in client_org.allowed_recipients[:5]
        ]
        more = len(client_org.allowed_recipients) - 5
        tail = f" and {more} more." if more > 0 else "."
        warnings.append(f"May only write to {', '.join(rules)}{tail}")
    limits = client_org.limits
    if limits.per_hour:
        warnings.append(f"At most {limits.per_hour} messages per hour for the organization.")
    if limits.per_day:
        warnings.append(f"At most {limits.per_day} messages per day for the organization.")
    return ClientOrgBanner(
        id=client_org.client_org_id,
        name=client_org.name,
        email_domain=client_org.email_domain,
        allowed_recipients=client_org.allowed_recipients,
        limits=client_org.limits,
        warnings=warnings,
    )


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
        client_org=_banner(client_org) if client_org else None,
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
