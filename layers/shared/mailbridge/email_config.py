"""Reading, saving and removing an agent's email connection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .access import load_owned_agent
from .errors import ConfigConflict, Conflict, InvalidField
from .models import (
    Caller,
    EmailConfigView,
    ImapConfigRequest,
    ImapConnection,
    ImapConnectionView,
    PasswordState,
    Status,
    StoredConfig,
)
from .presets import resolve_server

if TYPE_CHECKING:
    from .storage import AgentStore, SecretStore

# A save re-reads and re-applies on a concurrent write: the request is a full replacement,
# so re-applying it gives "last writer wins" without ever writing a torn record.
_SAVE_ATTEMPTS = 3


def view(agent_id: str, config: StoredConfig | None) -> EmailConfigView:
    if config is None:
        return EmailConfigView(
            agent_id=agent_id,
            status=Status.NOT_CONNECTED,
            config=None,
            last_error=None,
            last_test=None,
            version=None,
            updated_at=None,
        )
    connection = ImapConnectionView(
        **config.connection.model_dump(),
        password=PasswordState(set=True, updated_at=config.password_updated_at),
    )
    return EmailConfigView(
        agent_id=agent_id,
        status=config.status,
        config=connection,
        last_error=config.last_error,
        last_test=config.last_test,
        version=config.version,
        updated_at=config.updated_at,
    )


def get_email_config(agents: AgentStore, caller: Caller, agent_id: str) -> EmailConfigView:
    _, config = load_owned_agent(agents, caller, agent_id)
    return view(agent_id, config)


def save_email_config(
    agents: AgentStore,
    secrets: SecretStore,
    caller: Caller,
    agent_id: str,
    request: ImapConfigRequest,
) -> EmailConfigView:
    connection = ImapConnection(
        preset=request.preset,
        email=str(request.email),
        username=request.username or str(request.email),
        imap=resolve_server(request.preset, "imap", request.imap),
        smtp=resolve_server(request.preset, "smtp", request.smtp),
    )
    # An empty password means "keep the stored one", as the Email tab's field says.
    password = request.password.get_secret_value() if request.password else ""
    for _ in range(_SAVE_ATTEMPTS):
        agent, current = load_owned_agent(agents, caller, agent_id)
        if current is None and not password:
            raise InvalidField("password", "A password is required to connect a new mailbox.")
        now = datetime.now(UTC)
        secret_name = current.secret_name if current else secrets.name_for(agent_id)
        if password:
            secrets.write(
                secret_name,
                {"password": password},
                exists=current is not None,
                org_id=agent.org_id,
            )
        record = _next_record(agent_id, current, connection, secret_name, bool(password), now)
        try:
            agents.put_config(record, replaces_version=current.version if current else None)
        except ConfigConflict:
            continue
        return view(agent_id, record)
    raise Conflict(
        "concurrent_update",
        "The configuration kept changing while saving it.",
        hint="Reload the page and save again.",
    )


def _next_record(
    agent_id: str,
    current: StoredConfig | None,
    connection: ImapConnection,
    secret_name: str,
    password_changed: bool,
    now: datetime,
) -> StoredConfig:
    if current is not None and current.connection == connection and not password_changed:
        # Same servers and credentials: what the last test established still holds.
        return current.model_copy(update={"version": current.version + 1, "updated_at": now})
    return StoredConfig(
        agent_id=agent_id,
        connection=connection,
        secret_name=secret_name,
        password_updated_at=current.password_updated_at
        if current and not password_changed
        else now,
        status=Status.CONFIGURED,
        version=current.version + 1 if current else 1,
        updated_at=now,
    )


def delete_email_config(
    agents: AgentStore, secrets: SecretStore, caller: Caller, agent_id: str
) -> EmailConfigView:
    _, current = load_owned_agent(agents, caller, agent_id)
    if current is not None:
        # Record first, secret second: a failure in between leaves an unreferenced secret at
        # the agent's fixed name, which the next save takes over, never a dangling reference.
        agents.delete_config(agent_id)
        secrets.delete(current.secret_name)
    return view(agent_id, None)
