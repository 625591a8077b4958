"""OAuth apps an organization (or one of its client organizations) registers once for all
its agents, and how an agent's app is resolved: its own, else its client organization's,
else its organization's. Agents inherit by reference: rotating a shared secret reaches them
all at their next token refresh, and deleting a shared app marks them at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .errors import ConfigConflict, Conflict, Forbidden, InvalidField, NotFound
from .models import (
    Agent,
    AppOwner,
    AppReference,
    AppSource,
    Caller,
    LastError,
    OAuthConnection,
    OAuthProvider,
    SecretState,
    SharedApp,
    SharedAppRequest,
    SharedAppView,
    Status,
    StoredConfig,
)
from .oauth_providers import ProviderProblem
from .settings import settings

if TYPE_CHECKING:
    from .storage import AgentStore, OrgStore, SecretStore

SharedApps = dict[tuple[AppOwner, str], SharedApp]
_INHERITANCE: tuple[AppOwner, ...] = ("client_org", "org")


@dataclass(frozen=True)
class ResolvedApp:
    provider: OAuthProvider
    source: AppSource
    client_id: str
    tenant: str | None
    secret_name: str

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
        return ResolvedApp(
            connection.provider, "own", connection.client_id, connection.tenant, config.secret_name
        )
    app = _inherited(connection.provider, apps)
    if app is None:
        return None
    return ResolvedApp(app.provider, app.owner, app.client_id, app.tenant, app.secret_name)


def available_apps(apps: SharedApps) -> list[AppReference]:
    """For each provider, the shared app an agent without its own would use."""
    found = [_inherited(provider, apps) for provider in ("microsoft", "google")]
    return [
        AppReference(provider=a.provider, source=a.owner, client_id=a.client_id, tenant=a.tenant)
        for a in found
        if a is not None
    ]


def load_app(orgs: OrgStore, agent: Agent, config: StoredConfig) -> ResolvedApp:
    """The agent's app, or the problem that there is none (a shared app was deleted)."""
    connection = config.connection
    assert isinstance(connection, OAuthConnection)
    apps: SharedApps = {}
    if connection.client_id is None:
        apps, _ = orgs.agent_context(agent.org_id, agent.client_org_id)
    resolved = resolve_app(config, apps)
    if resolved is None:
        raise ProviderProblem("oauth_app_missing", connection.provider)
    return resolved


def record_inheritance(
    orgs: OrgStore, agent: Agent, provider: str | None, *, inherits: bool
) -> None:
    """Keep the back-references from every owner the agent could inherit from."""
    if provider is None:
        return
    orgs.set_inheritor("org", agent.org_id, provider, agent.agent_id, inherits=inherits)
    if agent.client_org_id:
        orgs.set_inheritor(
            "client_org", agent.client_org_id, provider, agent.agent_id, inherits=inherits
        )


# ---- the routes' domain ------------------------------------------------------------------


def _check_owner(
    orgs: OrgStore, caller: Caller, owner: AppOwner, owner_id: str, *, write: bool
) -> None:
    if owner == "org":
        owned = owner_id == caller.org_id
    else:
        client_org = orgs.get(owner_id)
        owned = client_org is not None and client_org.org_id == caller.org_id
    if not owned:
        # Other organizations' settings are not disclosed, not even their existence.
        raise NotFound("not_found", "No such organization in your account.")
    if write and not caller.is_admin:
        raise Forbidden(
            "admin_required",
            "Only organization admins may change shared email settings.",
            hint="Ask an admin of your organization.",
        )


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


def _app_not_found(provider: str) -> NotFound:
    return NotFound("oauth_app_not_found", f"No shared {provider} OAuth app is registered.")


def get_shared_app(
    orgs: OrgStore, caller: Caller, owner: AppOwner, owner_id: str, provider: OAuthProvider
) -> SharedAppView:
    _check_owner(orgs, caller, owner, owner_id, write=False)
    app = orgs.get_app(owner, owner_id, provider)
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
    _check_owner(orgs, caller, owner, owner_id, write=True)
    current = orgs.get_app(owner, owner_id, provider)
    secret = request.client_secret.get_secret_value() if request.client_secret else ""
    if not secret and (current is None or current.client_id != request.client_id):
        raise InvalidField("client_secret", "client_secret is required for a new app.")
    tenant = None
    if provider == "microsoft":
        tenant = request.tenant or (current.tenant if current else None)
        if tenant is None:
            raise InvalidField("tenant", "tenant is required for a Microsoft app.")
    now = datetime.now(UTC)
    name = current.secret_name if current else secrets.shared_name_for(owner, owner_id, provider)
    if secret:
        secrets.write(
            name, {"client_secret": secret}, exists=current is not None, org_id=caller.org_id
        )
    app = SharedApp(
        owner=owner,
        owner_id=owner_id,
        provider=provider,
        client_id=request.client_id,
        tenant=tenant,
        secret_name=name,
        secret_updated_at=now if secret or current is None else current.secret_updated_at,
        version=current.version + 1 if current else 1,
        updated_at=now,
    )
    try:
        orgs.put_app(app, replaces_version=current.version if current else None)
    except ConfigConflict:
        raise Conflict(
            "concurrent_update",
            "The app changed while saving it.",
            hint="Reload and save again.",
        ) from None
    return _view(app)


def delete_shared_app(
    orgs: OrgStore,
    agents: AgentStore,
    secrets: SecretStore,
    caller: Caller,
    owner: AppOwner,
    owner_id: str,
    provider: OAuthProvider,
) -> None:
    _check_owner(orgs, caller, owner, owner_id, write=True)
    app = orgs.get_app(owner, owner_id, provider)
    if app is None:
        raise _app_not_found(provider)
    orgs.delete_app(owner, owner_id, provider)
    secrets.delete(app.secret_name)
    for agent_id in orgs.inheritors(owner, owner_id, provider):
        _mark_if_orphaned(orgs, agents, agent_id, app)


def _mark_if_orphaned(
    orgs: OrgStore, agents: AgentStore, agent_id: str, removed: SharedApp
) -> None:
    """An agent authorized through the removed app cannot refresh its tokens any more: say
    so now, rather than at its next use."""
    agent, config = agents.load(agent_id)
    if agent is None or config is None or not isinstance(config.connection, OAuthConnection):
        return
    authorization = config.connection.authorization
    if config.connection.client_id is not None or config.connection.provider != removed.provider:
        return
    apps, _ = orgs.agent_context(agent.org_id, agent.client_org_id)
    now_resolved = resolve_app(config, apps)
    still_works = now_resolved is not None and (
        authorization is None or now_resolved.client_id == authorization.client_id
    )
    if still_works:
        return
    problem = ProviderProblem("oauth_app_removed", removed.provider).problem
    agents.update_status(
        config.model_copy(
            update={
                "status": Status.ERROR,
                "last_error": LastError(**problem.model_dump(), at=datetime.now(UTC)),
            }
        )
    )
