"""What an entry says changed, and refusals recorded (the histories admins read are in
`.history`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..connections.records import Status
from ..core.errors import ErrorCode, MailbridgeError, Unavailable
from ..core.observability import logger
from .models import Actor, AuditAction, AuditEntry, FieldChange

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..agents.models import Agent
    from ..connections.records import StoredConfig
    from ..core.types import SecretRef
    from ..orgs.records import ClientOrg, SharedApp
    from ..storage.protocols import AuditLog


# ---- what changed ---------------------------------------------------------------------


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changes(
    before: dict[str, Any],
    after: dict[str, Any],
    secrets: dict[str, list[SecretRef | None]],
) -> list[FieldChange]:
    """The fields that differ, with their values (dotted paths into nested settings); a
    secret only as changed (its reference moved to another version), never its value."""
    old, new = _flat(before), _flat(after)
    changed = [
        FieldChange(field=name, before=old.get(name), after=new.get(name))
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    ]
    changed += [
        FieldChange(field=name, secret=True) for name, (was, now) in secrets.items() if was != now
    ]
    return changed


def _settings(record: BaseModel | None, fields: set[str]) -> dict[str, Any]:
    return record.model_dump(mode="json", include=fields) if record else {}


def _connection_settings(config: StoredConfig | None) -> dict[str, Any]:
    if config is None:
        return {}
    return {"status": config.status.value, **config.connection.model_dump(mode="json")}


def connection_changes(
    before: StoredConfig | None, after: StoredConfig | None
) -> list[FieldChange]:
    """Settings, status and secrets: what a person would call the connection."""
    secrets: dict[str, list[SecretRef | None]] = {}
    for side, config in enumerate((before, after)):
        if config is not None:
            name = "password" if config.connection.provider == "imap" else "client_secret"
            secrets.setdefault(name, [None, None])[side] = config.secret
    secrets["tokens"] = [config.tokens if config else None for config in (before, after)]
    return _changes(_connection_settings(before), _connection_settings(after), secrets)


def connection_entry(
    agent: Agent,
    actor: Actor,
    action: AuditAction,
    before: StoredConfig | None,
    after: StoredConfig | None,
) -> AuditEntry:
    """The entry of a change of the agent's connection from `before` to `after` (None: no
    connection)."""
    return AuditEntry(
        org_id=agent.org_id,
        actor=actor,
        action=action,
        target="connection",
        agent_id=agent.agent_id,
        status=after.status if after else Status.NOT_CONNECTED,
        changes=connection_changes(before, after),
    )


def app_entry(
    actor: Actor, action: AuditAction, before: SharedApp | None, after: SharedApp | None
) -> AuditEntry:
    """The entry of a change of a shared app (None: none)."""
    app = after or before
    assert app is not None
    fields = {"client_id", "tenant", "secret_expires_at", "secret_expired_at"}
    secret = [each.secret if each else None for each in (before, after)]
    return AuditEntry(
        org_id=app.org_id,
        actor=actor,
        action=action,
        target="shared_app",
        client_org_id=app.client_org_id,
        provider=app.provider,
        changes=_changes(
            _settings(before, fields), _settings(after, fields), {"client_secret": secret}
        ),
    )


def policy_entry(
    actor: Actor, action: AuditAction, before: ClientOrg | None, after: ClientOrg | None
) -> AuditEntry:
    """The entry of a change of a client organization's policy (None: none)."""
    client_org = after or before
    assert client_org is not None
    fields = {"name", "email_domain", "allowed_recipients", "limits"}
    return AuditEntry(
        org_id=client_org.org_id,
        actor=actor,
        action=action,
        target="client_org_policy",
        client_org_id=client_org.client_org_id,
        changes=_changes(_settings(before, fields), _settings(after, fields), {}),
    )


def agent_entry(actor: Actor, before: Agent | None, after: Agent) -> AuditEntry:
    """The entry of an agent registered, or its name or client organization changed."""
    fields = {"name", "client_org_id"}
    return AuditEntry(
        org_id=after.org_id,
        actor=actor,
        action=AuditAction.AGENT_REGISTERED,
        target="agent",
        agent_id=after.agent_id,
        changes=_changes(_settings(before, fields), _settings(after, fields), {}),
    )


def record_refusal(
    log: AuditLog,
    agent: Agent,
    actor: Actor,
    action: AuditAction,
    code: ErrorCode,
    refusal: MailbridgeError,
) -> None:
    """What was asked of the agent's connection and refused by a policy or by the
    connection's account (`code` says which). Best effort: the refusal is answered whether
    or not its entry could be written, and it changed nothing."""
    entry = AuditEntry(
        org_id=agent.org_id,
        actor=actor,
        action=action,
        target="connection",
        agent_id=agent.agent_id,
    )
    try:
        log.record(entry.failed(code, refusal.message, refused=True))
    except Unavailable as unrecorded:
        logger.warning("refusal not recorded", extra={"error_code": unrecorded.code})
