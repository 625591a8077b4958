"""The platform registers its agents here (their organization comes from its token) and
removes them with everything this service keeps for them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ..audit.models import Actor, AuditAction
from ..audit.service import agent_entry
from ..connections.disconnecting import disconnect
from ..core.errors import InvalidField, agent_not_found
from ..core.fields import DisplayName
from ..core.types import PlatformId, StrictModel, example
from .access import require_person
from .models import Agent, Caller

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, FeedStore, OrgStore, SecretStore


class AgentRequest(StrictModel):
    """PUT body of an agent: what the platform knows of it that matters here."""

    model_config = example({"name": "Support agent", "client_org_id": "acme"})

    # The From of its sends, unless a send names itself otherwise.
    name: DisplayName
    client_org_id: PlatformId | None = Field(
        default=None, description="The client organization the agent works for, if any."
    )


def register_agent(
    agents: AgentStore, orgs: OrgStore, caller: Caller, agent_id: str, request: AgentRequest
) -> Agent:
    """Register the agent in the caller's organization, or update it there. An agent of
    another organization is not found (its id is not the caller's to take). Its client
    organization must exist: a misspelt one would leave the agent under no policy at all."""
    require_person(caller)
    if request.client_org_id is not None and orgs.get(caller.org_id, request.client_org_id) is None:
        raise InvalidField(
            "client_org_id",
            f"No client organization {request.client_org_id!r} in your account.",
            hint="Save the client organization's email policy first: that creates it.",
        )
    agent = Agent(
        agent_id=agent_id,
        org_id=caller.org_id,
        name=request.name,
        client_org_id=request.client_org_id,
    )
    current, _ = agents.load(agent_id)
    if current == agent:  # registered again as it is: nothing changes, nothing recorded
        return agent
    ours = current if current is not None and current.org_id == caller.org_id else None
    if not agents.put_agent(agent, agent_entry(Actor.of(caller), ours, agent)):
        raise agent_not_found(agent_id)
    return agent


def delete_agent(
    agents: AgentStore,
    secrets: SecretStore,
    orgs: OrgStore,
    feeds: FeedStore,
    caller: Caller,
    agent_id: str,
) -> None:
    """Revoke its grant at the provider, then delete its connection, secrets, counters,
    idempotency records and the agent itself. Deleting what is gone (or was never the
    caller's to see) succeeds, so a retry after a failure half-way finishes the job."""
    require_person(caller)
    # Marked first: from then on no save can write a connection for it, so the config read
    # next is the last one, and every other route finds the agent gone.
    if not agents.mark_deleting(agent_id, caller.org_id):
        return
    agent, config = agents.load(agent_id)
    if agent is None:  # a concurrent removal finished it
        return
    removed = AuditAction.AGENT_REMOVED
    disconnect(agents, secrets, orgs, feeds, agent, config, Actor.of(caller), removed)
    # The agent last: until it is gone, a retry finds it and finishes.
    agents.delete_agent(agent_id)
