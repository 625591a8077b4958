"""Register an agent (id, organization, optional client organization, name) in the table.

The platform owns its agents; this service only needs to know which organization each one
belongs to. Operators run this once per agent (or write the same item from the platform):

    python -m mailbridge_tools.register_agent --table TABLE --agent-id ID --org-id ORG \
        --name "Support agent" [--client-org-id CLIENT_ORG]
"""

from __future__ import annotations

import argparse

from mailbridge.agents.models import Agent
from mailbridge.audit.models import Actor
from mailbridge.audit.service import agent_entry
from mailbridge.storage.agents import DynamoAgentStore


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the stack's TableName output")
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--org-id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--client-org-id")
    args = parser.parse_args(argv)
    agent = Agent(
        agent_id=args.agent_id,
        org_id=args.org_id,
        name=args.name,
        client_org_id=args.client_org_id,
    )
    operator = Actor(kind="system", subject="mailbridge_tools.register_agent")
    if not DynamoAgentStore(args.table).put_agent(agent, agent_entry(operator, None, agent)):
        raise SystemExit(f"agent {agent.agent_id} is another organization's, or being removed")
    print(f"registered agent {agent.agent_id} in organization {agent.org_id}")


if __name__ == "__main__":
    main()
