"""Client organizations' email policies: read by members (the Email tab's banner), written
by the organization's admins. A client organization exists within its organization only
(another organization's "acme" is another client organization)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..agents.access import require_admin, require_person
from ..agents.models import Caller
from ..audit.models import Actor, AuditAction
from ..audit.service import app_entry, policy_entry
from ..core.errors import WRITE_ATTEMPTS, ErrorCode, MailbridgeError, StaleWrite, kept_changing
from ..core.types import OAUTH_PROVIDERS
from .admin_models import EmailPolicyRequest
from .records import ClientOrg

if TYPE_CHECKING:
    from ..storage.protocols import OrgStore, SecretStore


def _not_found(client_org_id: str) -> MailbridgeError:
    return MailbridgeError(
        ErrorCode.CLIENT_ORG_NOT_FOUND,
        f"No client organization {client_org_id!r} in your account.",
    )


def get_email_policy(orgs: OrgStore, caller: Caller, client_org_id: str) -> ClientOrg:
    require_person(caller)
    client_org = orgs.get(caller.org_id, client_org_id)
    if client_org is None:
        raise _not_found(client_org_id)
    return client_org


def save_email_policy(
    orgs: OrgStore, caller: Caller, client_org_id: str, request: EmailPolicyRequest
) -> ClientOrg:
    """Create or replace the policy; the first save creates the client organization."""
    require_admin(caller, "change email policies")
    current = orgs.get(caller.org_id, client_org_id)
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
    entry = policy_entry(Actor.of(caller), AuditAction.POLICY_SAVED, current, client_org)
    try:
        orgs.put(client_org, replaces_version=current.version if current else None, entry=entry)
    except StaleWrite:
        raise MailbridgeError(
            ErrorCode.CONCURRENT_UPDATE,
            "The policy changed while saving it.",
            hint="Reload and save.",
        ) from None
    return client_org


def delete_email_policy(
    orgs: OrgStore, secrets: SecretStore, caller: Caller, client_org_id: str
) -> None:
    """Remove the client organization and its shared apps. Deleting what is already gone
    succeeds, so a retry after a failure half-way finishes the job."""
    require_admin(caller, "change email policies")
    # The records first, all at once, each over the version read (so that the entries say
    # what was deleted): a failure after them leaves secrets nothing reads, at fixed names
    # the retry deletes.
    actor = Actor.of(caller)
    for _ in range(WRITE_ATTEMPTS):
        shared, current = orgs.agent_context(caller.org_id, client_org_id)
        apps = [app for (owner, _), app in shared.items() if owner == "client_org"]
        if current is None and not apps:
            break
        entries = [app_entry(actor, AuditAction.SHARED_APP_REMOVED, app, None) for app in apps]
        if current is not None:
            entries.insert(0, policy_entry(actor, AuditAction.POLICY_REMOVED, current, None))
        try:
            orgs.delete(current, apps, entries)
            break
        except StaleWrite:  # saved meanwhile
            continue
    else:
        raise kept_changing("client organization")
    for provider in OAUTH_PROVIDERS:
        secrets.delete(secrets.shared_name_for(caller.org_id, client_org_id, provider))
