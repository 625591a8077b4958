"""OAuth apps an organization (or one of its client organizations) registers once for all
its agents, and how an agent's app is resolved: its own, else its client organization's,
else its organization's. Agents inherit by reference, resolved at each use: rotating a
shared secret reaches them all at their next token refresh, and an agent whose app was
deleted (or replaced by another) is shown in error at once, with nothing to update.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, NamedTuple

from ..agents.access import require_admin, require_person
from ..agents.models import Agent, Caller
from ..audit.models import SERVICE, Actor, AuditAction
from ..audit.service import app_entry
from ..connections.records import OAuthConnection, StoredConfig
from ..core.errors import (
    WRITE_ATTEMPTS,
    Cause,
    ErrorCode,
    InvalidField,
    MailbridgeError,
    ProviderError,
    StaleWrite,
    Unavailable,
    kept_changing,
)
from ..core.observability import logger
from ..core.settings import settings
from ..core.types import OAUTH_PROVIDERS, PROVIDER_NAMES, OAuthProvider, SecretRef, SecretState
from .models import (
    AppOwner,
    AppReference,
    AppSource,
    AppWarning,
    SharedApp,
    SharedAppRequest,
    SharedAppView,
)

if TYPE_CHECKING:
    from ..storage.protocols import OrgStore, SecretStore

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


# Azure's portal offers secrets of 6 to 24 months: a month is time to rotate one.
_WARNING_DAYS = 30
_ROTATE = {
    "microsoft": "Azure (App registrations > the app > Certificates & secrets)",
    "google": "the Google Cloud console (APIs & Services > Credentials > the OAuth client)",
}


def _rotate_hint(provider: OAuthProvider) -> str:
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
    return AppWarning(code=code, message=message, hint=_rotate_hint(app.provider))


def _app_warnings(app: SharedApp) -> list[AppWarning]:
    warnings = []
    if app.secret_expired_at is not None:
        refused = (
            f"{PROVIDER_NAMES[app.provider]} refused this app's client secret on "
            f"{app.secret_expired_at.date().isoformat()}: it expired or was deleted. Every "
            "agent using the app is in error until a new secret is saved."
        )
        warnings.append(
            AppWarning(
                code=ErrorCode.OAUTH_CLIENT_INVALID,
                message=refused,
                hint=_rotate_hint(app.provider),
            )
        )
    expiry = secret_expiry(app, datetime.now(UTC).date())
    return [*warnings, expiry] if expiry else warnings


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
        secret_expires_at=app.secret_expires_at,
        secret_expired_at=app.secret_expired_at,
        redirect_uri=settings().oauth_redirect_uri,
        version=app.version,
        updated_at=app.updated_at,
        warnings=_app_warnings(app),
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
    # Left out, the recorded date stays with the secret it is of (as the tenant does); a new
    # secret without one has none; null clears it.
    expires_at = current.secret_expires_at if current and not secret else None
    if "secret_expires_at" in request.model_fields_set:
        expires_at = request.secret_expires_at
    app = SharedApp(
        owner=owner,
        owner_id=owner_id,
        org_id=caller.org_id,
        provider=provider,
        client_id=request.client_id,
        tenant=tenant,
        secret=stored,
        secret_updated_at=now if secret else current.secret_updated_at if current else now,
        secret_expires_at=expires_at,
        # A new secret is the fix of a refused one.
        secret_expired_at=None if secret or current is None else current.secret_expired_at,
        version=current.version + 1 if current else 1,
        updated_at=now,
    )
    entry = app_entry(Actor.of(caller), AuditAction.SHARED_APP_SAVED, current, app)
    try:
        orgs.put_app(app, replaces_version=current.version if current else None, entry=entry)
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
    for _ in range(WRITE_ATTEMPTS):
        app = orgs.get_app(caller.org_id, client_org_id, provider)
        if app is None:
            break
        try:
            orgs.delete_app(
                app, app_entry(Actor.of(caller), AuditAction.SHARED_APP_REMOVED, app, None)
            )
            break
        except StaleWrite:  # saved meanwhile: the entry must say what was deleted
            continue
    else:
        raise kept_changing("app")
    secrets.delete(secrets.shared_name_for(caller.org_id, client_org_id, provider))
