"""The demo agents a local run starts with, so that a newcomer can connect one right away."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import LocalApi

DEMO_ORG_ID, DEMO_AGENT_ID = "demo-org", "demo-agent"
CLIENT_ORG_ID, CLIENT_AGENT_ID = "acme", "acme-agent"


def seed_demo_agent(api: LocalApi) -> None:
    """The agent a newcomer can connect right away; the platform registers real ones."""
    from mailbridge.models import Agent
    from mailbridge.storage import AgentStore

    store = AgentStore(api.table_name)
    store.put_agent(Agent(agent_id=DEMO_AGENT_ID, org_id=DEMO_ORG_ID, name="Demo agent"))
    store.put_agent(
        Agent(
            agent_id=CLIENT_AGENT_ID,
            org_id=DEMO_ORG_ID,
            name="Acme's agent",
            client_org_id=CLIENT_ORG_ID,
        )
    )
