"""Tenant isolation: every route that names an agent loads it through here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import ErrorCode, MailbridgeError, agent_not_found
from .models import Agent, Caller

if TYPE_CHECKING:
    from ..connections.records import StoredConfig
    from ..storage.protocols import AgentStore


def load_owned_agent(
    agents: AgentStore, caller: Caller, agent_id: str
) -> tuple[Agent, StoredConfig | None]:
    """For the Email tab's routes: the agent and its config, if the caller is a person of the
    organization that owns the agent; else 404, which says nothing of other organizations'."""
    require_person(caller)
    return _owned(agents, caller, agent_id)


def load_agent_for_its_mail(
    agents: AgentStore, caller: Caller, agent_id: str
) -> tuple[Agent, StoredConfig | None]:
    """For the agent's mail: its own runtime's token (another agent's is 404, as another
    organization's), or an admin of its organization (the Email tab's test message)."""
    if caller.agent_id is None:
        require_admin(caller, "use an agent's mailbox")
    elif caller.agent_id != agent_id:
        raise agent_not_found(agent_id)
    return _owned(agents, caller, agent_id)


def _owned(agents: AgentStore, caller: Caller, agent_id: str) -> tuple[Agent, StoredConfig | None]:
    agent, config = agents.load(agent_id)
    if agent is None or agent.deleting or agent.org_id != caller.org_id:
        raise agent_not_found(agent_id)
    return agent, config


def require_person(caller: Caller) -> None:
    """Organization-wide settings are a person's business, never an agent's."""
    if caller.agent_id is not None:
        raise MailbridgeError(
            ErrorCode.AGENT_TOKEN_NOT_ALLOWED,
            "An agent's token acts for its agent only, not on organization settings.",
            hint="Use a token of an organization admin or member.",
        )


def require_admin(caller: Caller, what: str) -> None:
    """`what` needs an organization admin (a person)."""
    require_person(caller)
    if not caller.is_admin:
        raise MailbridgeError(
            ErrorCode.ADMIN_REQUIRED,
            f"Only organization admins may {what}.",
            hint="Ask an admin of your organization.",
        )
