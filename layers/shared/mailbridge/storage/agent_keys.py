"""Where an agent's items lie in the table: its partition, the new-mail feed's record of
what it announced, and the index of connected configs. Apart from the agents' store, so that
new mail's feed store, which only needs these, loads nothing of the agent records."""

# The index of connected configs by provider (its partition key).
CONNECTED_PROVIDER = "connected_provider"
CONNECTED_INDEX = "ConnectedByProvider"
# The index of OAuth connections by the grant they hold (its partition key).
OAUTH_GRANT = "oauth_grant"
GRANT_INDEX = "ByGrant"


def agent_partition(agent_id: str) -> str:
    return f"AGENT#{agent_id}"


def delivered_partition(agent_id: str) -> str:
    """Where the new-mail feed notes each message it announced (`storage.newmail`)."""
    return f"DELIVERED#{agent_id}"
