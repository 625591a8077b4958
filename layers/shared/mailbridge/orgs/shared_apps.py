"""OAuth apps an organization (or one of its client organizations) registers once for all
its agents, and how an agent's app is resolved: its own, else its client organization's,
else its organization's. Agents inherit by reference, resolved at each use: rotating a
shared secret reaches them all at their next token refresh, and an agent whose app was
deleted (or replaced by another) is shown in error at once, with nothing to update.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..agents.access import require_admin, require_person
from ..agents.models import Agent, Caller
from ..connections.models import OAuthConnection, StoredConfig
from ..core.errors import ErrorCode, InvalidField, MailbridgeError, ProviderError, StaleWrite
from ..core.settings import settings
from ..core.types import OAUTH_PROVIDERS, OAuthProvider, SecretRef, SecretState
from .models import AppOwner, AppReference, AppSource, SharedApp, SharedAppRequest, SharedAppView

if TYPE_CHECKING:
    from ..storage.protocols import OrgStore, SecretStore

SharedApps = dict[tuple[AppOwner, str], SharedApp]
_INHERITANCE: tuple[AppOwner, ...] = ("client_org", "org")


@dataclass(frozen=True)
class ResolvedApp:
    provider: OAuthProvider
    source: AppSource
    client_id: str
    tenant: str | None
    secret: SecretRef

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
    return ResolvedApp(app.provider, app.owner, app.client_id, app.tenant, app.secret)


def unusable_app(config: StoredConfig, app: ResolvedApp | None) -> ProviderError | None:
    """Why the agent cannot use its app now, if it cannot: none is available, or its tokens
    were granted to another app (a shared app deleted or replaced since)."""
    connection = config.connection
    assert isinstance(connection, OAuthConnection)
    authorization = connection.authorization
    if app is None:
        code = ErrorCode.OAUTH_APP_REMOVED if authorization else ErrorCode.OAUTH_APP_MISSING
        return ProviderError(code, connection.provider)
    if authorization is not None and app.client_id != authorization.client_id:
        return ProviderError(ErrorCode.REAUTHORIZATION_REQUIRED, connection.provider)
    return None


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


# ---- the routes' domain ------------------------------------------------------------------


def _check_owner(
    orgs: OrgStore, caller: Caller, owner: AppOwner, owner_id: str, *, write: bool
) -> str | None:
    """The client organization the app belongs to (None: the organization's own), once
    the caller may read it (or write it)."""
    require_person(caller)
    client_org_id = owner_id if owner == "client_org" else None
    if owner == "org":
        owned = owner_id == caller.org_id
    else:
        owned = orgs.get(caller.org_id, owner_id) is not None
    if not owned:
        # Other organizations' settings are not disclosed, not even their existence.
        raise MailbridgeError(ErrorCode.NOT_FOUND, "No such organization in your account.")
    if write:
        require_admin(caller, "change shared email settings")
    return client_org_id


def _view(app: SharedApp) -> SharedAppView:
    return SharedAppView(
        owner=app.owner,
        owner_id=app.owner_id,
        provider=app.provider,
        client_id=app.client_id,
        tenant=app.tenant,
        client_secret=SecretState(set=True, updated_at=app.secret_updated_at),
        redirect_uri=settings().oauth_redirect_uri,
        version=app.version,
        updated_at=app.updated_at,
    )


def _app_not_found(provider: str) -> MailbridgeError:
    return MailbridgeError(
        ErrorCode.OAUTH_APP_NOT_FOUND, f"No shared {provider} OAuth app is registered."
    )


def get_shared_app(
    orgs: OrgStore, caller: Caller, owner: AppOwner, owner_id: str, provider: OAuthProvider
) -> SharedAppView:
    client_org_id = _check_owner(orgs, caller, owner, owner_id, write=False)
    app = orgs.get_app(caller.org_id, client_org_id, provider)
    if app is None:
        raise _app_not_found(provider)
    return _view(app)


def save_shared_app(
    orgs: OrgStore,
    secrets: SecretStore,
    caller: Caller,
    owner: AppOwner,
    owner_id: str,
    provider: OAuthProvider,
    request: SharedAppRequest,
) -> SharedAppView:
    client_org_id = _check_owner(orgs, caller, owner, owner_id, write=True)
    current = orgs.get_app(caller.org_id, client_org_id, provider)
    secret = request.client_secret.get_secret_value() if request.client_secret else ""
    if not secret and (current is None or current.client_id != request.client_id):
        raise InvalidField("client_secret", "client_secret is required for a new app.")
    tenant = None
    if provider == "microsoft":
        tenant = request.tenant or (current.tenant if current else None)
        if tenant is None:
            raise InvalidField("tenant", "tenant is required for a Microsoft app.")
    now = datetime.now(UTC)
    if secret:
        stored = secrets.write(
            secrets.shared_name_for(caller.org_id, client_org_id, provider),
            {"client_secret": secret},
            exists=current is not None,
            org_id=caller.org_id,
        )
    else:
        assert current is not None
        stored = current.secret
    app = SharedApp(
        owner=owner,
        owner_id=owner_id,
        org_id=caller.org_id,
        provider=provider,
        client_id=request.client_id,
        tenant=tenant,
        secret=stored,
        secret_updated_at=now if secret else current.secret_updated_at if current else now,
        version=current.version + 1 if current else 1,
        updated_at=now,
    )
    try:
        orgs.put_app(app, replaces_version=current.version if current else None)
    except StaleWrite:
        raise MailbridgeError(
            ErrorCode.CONCURRENT_UPDATE,
            "The app changed while saving it.",
            hint="Reload and save again.",
        ) from None
    return _view(app)


def delete_shared_app(
    orgs: OrgStore,
    secrets: SecretStore,
    caller: Caller,
    owner: AppOwner,
    owner_id: str,
    provider: OAuthProvider,
) -> None:
    """Remove the app and its secret. Agents that used it show the error at their next
    read (see unusable_app). Deleting what is already gone succeeds, so a retry after a
    failure half-way finishes the job."""
    client_org_id = _check_owner(orgs, caller, owner, owner_id, write=True)
    # The record first: a failure after it leaves a secret nothing reads, at a fixed name
    # the retry deletes, never a record pointing at a missing secret.
    orgs.delete_app(caller.org_id, client_org_id, provider)
    secrets.delete(secrets.shared_name_for(caller.org_id, client_org_id, provider))
