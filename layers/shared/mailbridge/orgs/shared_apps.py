"""OAuth apps an organization (or one of its client organizations) registers once for all
its agents: the admin routes' domain. How an agent's app is resolved from them is in
`.inherited_apps`; a provider's refusal of a shared secret is marked on it by `oauth.tokens`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..agents.access import require_admin, require_person
from ..agents.models import Caller
from ..audit.models import Actor, AuditAction
from ..audit.service import app_entry
from ..core.errors import (
    WRITE_ATTEMPTS,
    ErrorCode,
    InvalidField,
    MailbridgeError,
    StaleWrite,
    kept_changing,
)
from ..core.settings import settings
from ..core.types import PROVIDER_NAMES, OAuthProvider, SecretState
from .admin_models import SharedAppRequest, SharedAppView
from .inherited_apps import rotate_hint, secret_expiry
from .models import AppWarning
from .records import AppOwner, SharedApp

if TYPE_CHECKING:
    from ..storage.protocols import OrgStore, SecretStore


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
                hint=rotate_hint(app.provider),
            )
        )
    expiry = secret_expiry(app, datetime.now(UTC).date())
    return [*warnings, expiry] if expiry else warnings


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
