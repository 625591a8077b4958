"""The demo agents a local run starts with, so that a newcomer can connect one right away."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import LocalApi

DEMO_ORG_ID, DEMO_AGENT_ID = "demo-org", "demo-agent"
CLIENT_ORG_ID, CLIENT_AGENT_ID = "acme", "acme-agent"


def seed_demo_agent(api: LocalApi) -> None:
    """The agent a newcomer can connect right away; the platform registers real ones."""
    # Imported at seeding: the layer reads its settings from the environment the run set.
    from mailbridge.agents.models import Agent
    from mailbridge.audit.models import Actor
    from mailbridge.audit.service import agent_entry
    from mailbridge.storage.agents import DynamoAgentStore

    store = DynamoAgentStore(api.table_name)
    seeder = Actor(kind="system", subject="local run")
    for agent in (
        Agent(agent_id=DEMO_AGENT_ID, org_id=DEMO_ORG_ID, name="Demo agent"),
        Agent(
            agent_id=CLIENT_AGENT_ID,
            org_id=DEMO_ORG_ID,
            name="Acme's agent",
            client_org_id=CLIENT_ORG_ID,
        ),
    ):
        store.put_agent(agent, agent_entry(seeder, None, agent))
