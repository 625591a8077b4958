"""An agent's connection as the Email tab's routes give it: the connection's view, and the
connection test's answer. What saving takes is in `.request_models`, the presets in
`.presets`, what is stored in `.records`."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from ..core.types import Model, OAuthProvider, SecretState
from ..orgs.models import AppReference, ClientOrgBanner
from .records import (
    ConnectionTestResult,
    ImapConnection,
    LastError,
    OAuthConnection,
    Problem,
    Status,
)


class DeliveryView(Model):
    """How new mail reaches the agent, as the Email tab shows it."""

    state: Literal["active", "degraded", "inactive"] = Field(
        description="`degraded`: new mail is not reaching the agent as it should (see "
        "`problem`; the connection itself may still work); `inactive`: connected before "
        "this service announced new mail, until a passing test starts it."
    )
    of: Literal["look", "push"] | None = Field(
        default=None,
        description="What is degraded: looking at the inbox, or the provider's push (new "
        "mail then waits for the rounds).",
    )
    problem: Problem | None = None
    since: datetime | None = Field(default=None, description="When it became degraded.")
    failures: int = Field(default=0, description="Failed attempts in a row.")


class ImapConnectionView(ImapConnection):
    password: SecretState


class OAuthConnectionView(OAuthConnection):
    client_secret: SecretState | None = Field(description="None when the app is inherited.")
    redirect_uri: str = Field(description="Register exactly this URI with the provider.")
    app: AppReference | None = Field(
        description="The app in use and where it comes from; None if none is available."
    )


class OAuthSetup(Model):
    """What to register in the provider's console for an app of one's own."""

    redirect_uri: str = Field(description="Register exactly this URI with the provider.")
    scopes: list[str] = Field(description="The permissions sign-in asks for: grant them.")


class EmailConfigView(Model):
    """GET/PUT response: the agent's connection without any secret."""

    agent_id: str
    status: Status
    reason: str = Field(
        description="Why the status is what it is, a stable code: `not_configured`, "
        "`untested` (configured), `authorization_required` (awaiting authorization), "
        "`verified` (connected), or the last error's code."
    )
    checked_at: datetime | None = Field(
        description="When the status was last established: a test, a sign-in, a failed use "
        "of the connection, or this read (a policy or requirement that changed since)."
    )
    config: ImapConnectionView | OAuthConnectionView | None
    last_error: LastError | None
    last_test: ConnectionTestResult | None
    version: int | None
    updated_at: datetime | None
    shared_apps: list[AppReference] = Field(
        description="OAuth apps this agent inherits if it gives no client ID of its own."
    )
    client_org: ClientOrgBanner | None = Field(
        description="The client organization the agent belongs to, and its policy."
    )
    delivery: DeliveryView | None = Field(
        default=None, description="How new mail reaches the agent; shown while Connected."
    )
    warnings: list[Problem] = Field(
        default_factory=list,
        description="What works but not fully, each with its stable code and how to fix it "
        "(`send_permission_missing`: the agent can receive but not send).",
    )
    oauth_setup: dict[OAuthProvider, OAuthSetup] = Field(
        default_factory=dict,
        description="Per OAuth provider, what its app needs, before anything is saved; empty "
        "when OAuth is not set up on this deployment.",
    )


class ConnectionTestResponse(ConnectionTestResult):
    status: Status = Field(description="The agent's status after this test was recorded.")
