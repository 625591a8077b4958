"""Client organizations' email policies: read by members (the Email tab's banner), written
by the owning organization's admins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .errors import ConfigConflict, Conflict, Forbidden, NotFound
from .models import Caller, ClientOrg, EmailPolicyRequest

if TYPE_CHECKING:
    from .storage import OrgStore


def _not_found(client_org_id: str) -> NotFound:
    return NotFound(
        "client_org_not_found", f"No client organization {client_org_id!r} in your account."
    )


def _owned(orgs: OrgStore, caller: Caller, client_org_id: str) -> ClientOrg | None:
    client_org = orgs.get(client_org_id)
    if client_org is not None and client_org.org_id != caller.org_id:
        raise _not_found(client_org_id)  # another organization's: not disclosed
    return client_org


def _require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden(
            "admin_required",
            "Only organization admins may change email policies.",
            hint="Ask an admin of your organization.",
        )


def get_email_policy(orgs: OrgStore, caller: Caller, client_org_id: str) -> ClientOrg:
    client_org = _owned(orgs, caller, client_org_id)
    if client_org is None:
        raise _not_found(client_org_id)
    return client_org


def save_email_policy(
    orgs: OrgStore, caller: Caller, client_org_id: str, request: EmailPolicyRequest
) -> ClientOrg:
    """Create or replace the policy; the first save makes the client organization the
    caller's organization's."""
    _require_admin(caller)
    current = _owned(orgs, caller, client_org_id)
    client_org = ClientOrg(
        client_org_id=client_org_id,
        org_id=caller.org_id,
        name=request.name,
        email_domain=request.email_domain,
        allowed_recipients=sorted(set(request.allowed_recipients)),
        limits=request.limits,
        version=current.version + 1 if current else 1,
        updated_at=datetime.now(UTC),
    )
    try:
        orgs.put(client_org, replaces_version=current.version if current else None)
    except ConfigConflict:
        # Changed concurrently, or claimed by another organization in the meantime.
        raise Conflict(
            "concurrent_update", "The policy changed while saving it.", hint="Reload and save."
        ) from None
    return client_org


def delete_email_policy(orgs: OrgStore, caller: Caller, client_org_id: str) -> None:
    _require_admin(caller)
    if _owned(orgs, caller, client_org_id) is None:
        raise _not_found(client_org_id)
    orgs.delete(client_org_id)
