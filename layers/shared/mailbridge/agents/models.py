"""The agent as the platform registers it, and the caller of a request."""

from pydantic import Field

from ..core.types import Model, PlatformId


class Agent(Model):
    agent_id: PlatformId
    org_id: PlatformId
    name: str
    client_org_id: PlatformId | None = None
    # Being removed: only its removal finds it. Never shown.
    deleting: bool = Field(default=False, exclude=True)
    # The version of its last connection, once disconnected: a new one's versions go on from
    # there, so nothing begun for the old one (a test, a sign-in, an If-Match) is taken for
    # the new one. Never shown.
    last_config_version: int = Field(default=0, exclude=True)


class Caller(Model):
    """Who is calling, from the JWT the API Gateway authorizer already verified: a person of
    the organization (an admin or a member), or an agent's runtime, whose token names the one
    agent it may act for."""

    subject: str
    org_id: str
    is_admin: bool = False
    agent_id: str | None = None
