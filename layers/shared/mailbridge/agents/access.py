"""Tenant isolation: every route that names an agent loads it through here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import agent_not_found
from .models import Agent, Caller

if TYPE_CHECKING:
    from ..connections.models import StoredConfig
    from ..storage.protocols import AgentStore


def load_owned_agent(
    agents: AgentStore, caller: Caller, agent_id: str
) -> tuple[Agent, StoredConfig | None]:
    """The agent and its config, if the caller's organization owns the agent; else 404."""
    agent, config = agents.load(agent_id)
    if agent is None or agent.org_id != caller.org_id:
        raise agent_not_found(agent_id)
    return agent, config
