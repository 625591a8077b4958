"""Which OAuth app an agent uses: its own, else its client organization's shared app, else its
organization's. Agents inherit by reference, resolved at each use: rotating a shared secret
reaches them all at their next token refresh, and an agent whose app was deleted (or
replaced by another) is shown in error at once, with nothing to update."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, NamedTuple

from ..agents.models import Agent
from ..connections.records import OAuthConnection, StoredConfig
from ..core.errors import Cause, ErrorCode, ProviderError
from ..core.types import OAUTH_PROVIDERS, PROVIDER_NAMES, OAuthProvider, SecretRef
from .models import AppReference, AppWarning
from .records import AppOwner, AppSource, SharedApp

if TYPE_CHECKING:
    from ..storage.protocols import OrgStore


SharedApps = dict[tuple[AppOwner, str], SharedApp]


_INHERITANCE: tuple[AppOwner, ...] = ("client_org", "org")


class ResolvedApp(NamedTuple):
    provider: OAuthProvider
    source: AppSource
    client_id: str
    tenant: str | None
    secret: SecretRef
    shared: SharedApp | None = None  # the shared app as read, when inherited

    @property
    def reference(self) -> AppReference:
        return AppReference(
            provider=self.provider, source=self.source, client_id=self.client_id, tenant=self.tenant
        )


def _inherited(provider: str, apps: SharedApps) -> SharedApp | None:
    return next((apps[(o, provider)] for o in _INHERITANCE if (o, provider) in apps), None)


def resolve_app(config: StoredConfig, apps: SharedApps) -> ResolvedApp | None:
    connection = config.connection
    assert isinstance(connection, OAuthConnection)
    if connection.client_id is not None:
        assert config.secret is not None  # an own app is saved with its secret
        return ResolvedApp(
            connection.provider, "own", connection.client_id, connection.tenant, config.secret
        )
    app = _inherited(connection.provider, apps)
    if app is None:
        return None
    return ResolvedApp(app.provider, app.owner, app.client_id, app.tenant, app.secret, app)


def unusable_app(config: StoredConfig, app: ResolvedApp | None) -> ProviderError | None:
    """Why the agent cannot use its app now, if it cannot: none is available, its tokens
    were granted to another app (a shared app deleted or replaced since), or the provider
    refused the shared app's secret (fixed in the shared app, for all its agents at once)."""
    connection = config.connection
    assert isinstance(connection, OAuthConnection)
    authorization = connection.authorization
    if app is None:
        code = ErrorCode.OAUTH_APP_REMOVED if authorization else ErrorCode.OAUTH_APP_MISSING
        return ProviderError(code, connection.provider)
    if authorization is not None and app.client_id != authorization.client_id:
        return ProviderError(ErrorCode.REAUTHORIZATION_REQUIRED, connection.provider)
    return marked_secret(app)


def marked_secret(app: ResolvedApp) -> ProviderError | None:
    """The provider refused the shared app's secret: no use of it, a sign-in included,
    works until the shared app's secret is rotated."""
    if app.shared is not None and app.shared.secret_expired_at is not None:
        cause = Cause.SHARED_APP_SECRET_REFUSED
        return ProviderError(ErrorCode.OAUTH_CLIENT_INVALID, app.provider, cause=cause)
    return None


# Azure's portal offers secrets of 6 to 24 months: a month is time to rotate one.
_WARNING_DAYS = 30


_ROTATE = {
    "microsoft": "Azure (App registrations > the app > Certificates & secrets)",
    "google": "the Google Cloud console (APIs & Services > Credentials > the OAuth client)",
}


def rotate_hint(provider: OAuthProvider) -> str:
    return (
        f"Rotate the client secret in {_ROTATE[provider]} and save the new one, with its "
        "expiry date, in the shared app (an organization admin); its agents need no "
        "re-authorization."
    )


def secret_expiry(app: SharedApp, today: date) -> AppWarning | None:
    """The warning that the app's recorded secret expiry date is 30 days away or less, or
    past."""
    expires = app.secret_expires_at
    if expires is None or (expires - today).days > _WARNING_DAYS:
        return None
    whose = "client organization's" if app.owner == "client_org" else "organization's"
    secret = f"The client secret of the {whose} shared {PROVIDER_NAMES[app.provider]} app"
    days = (expires - today).days
    if days < 0:
        code, message = "app_secret_expired", f"{secret} expired on {expires}."
    else:
        when = "today" if days == 0 else "tomorrow" if days == 1 else f"in {days} days"
        code, message = "app_secret_expiring", f"{secret} expires on {expires} ({when})."
    return AppWarning(code=code, message=message, hint=rotate_hint(app.provider))


def available_apps(apps: SharedApps) -> list[AppReference]:
    """For each provider, the shared app an agent without its own would use."""
    found = [_inherited(provider, apps) for provider in OAUTH_PROVIDERS]
    return [
        AppReference(provider=a.provider, source=a.owner, client_id=a.client_id, tenant=a.tenant)
        for a in found
        if a is not None
    ]


def find_app(orgs: OrgStore, agent: Agent, config: StoredConfig) -> ResolvedApp | None:
    """The agent's app as things stand: its own, or the shared one it inherits now."""
    connection = config.connection
    assert isinstance(connection, OAuthConnection)
    apps: SharedApps = {}
    if connection.client_id is None:
        apps, _ = orgs.agent_context(agent.org_id, agent.client_org_id)
    return resolve_app(config, apps)


def load_app(orgs: OrgStore, agent: Agent, config: StoredConfig) -> ResolvedApp:
    """The app the agent's tokens work with, or the problem that it has none (see
    unusable_app)."""
    app = find_app(orgs, agent, config)
    problem = unusable_app(config, app)
    if problem is not None:
        raise problem
    assert app is not None
    return app
