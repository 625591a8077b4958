"""What is stored of an agent's connection (no secret in it), and the results of its checks:
the record every function that reads an agent loads, apart from the requests and views only
the Email tab's routes need (`.models`)."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from ..core.errors import MailbridgeError
from ..core.fields import Hostname, Port
from ..core.types import Model, OAuthProvider, SecretRef, StrictModel


class Status(StrEnum):
    NOT_CONNECTED = "not_connected"
    CONFIGURED = "configured"
    AWAITING_AUTHORIZATION = "awaiting_authorization"
    CONNECTED = "connected"
    ERROR = "error"


class Security(StrEnum):
    TLS = "tls"  # implicit TLS from the first byte (IMAP 993, SMTP 465)
    STARTTLS = "starttls"  # plain connection upgraded before login (IMAP 143, SMTP 587)


PresetId = Literal["microsoft365", "gmail", "yahoo", "zoho", "fastmail", "custom"]


class ServerSettings(StrictModel):
    host: Hostname
    port: Port
    security: Security


class ImapConnection(Model):
    """The resolved, complete IMAP/SMTP settings of an agent (no secret in it)."""

    provider: Literal["imap"] = "imap"
    preset: PresetId
    email: str
    username: str
    imap: ServerSettings
    smtp: ServerSettings


class OAuthAuthorization(Model):
    """What the provider confirmed when the account was authorized."""

    email: str
    granted_scopes: list[str]
    authorized_at: datetime
    client_id: str  # the app the grant belongs to: its tokens work with no other
    tenant_id: str | None = None  # Microsoft: the directory the account signed in to
    account_id: str | None = Field(
        default=None,
        description="The account signed in (Microsoft: `<tenant id>/<object id>`, Google: "
        "the subject): a re-authorization must sign in the same one. None for an "
        "authorization made before accounts were recorded: its next sign-in records it.",
    )


class OAuthConnection(Model):
    """An agent's OAuth app and, once authorized, its account (no secret in it)."""

    provider: OAuthProvider
    client_id: str | None = Field(description="None: the app is inherited (see `app`).")
    tenant: str | None = None  # Microsoft only
    scopes: list[str] = Field(description="What authorization asks (or asked) for.")
    authorization: OAuthAuthorization | None = None


Connection = Annotated[ImapConnection | OAuthConnection, Field(discriminator="provider")]


class Problem(Model):
    """A classified failure: stable code, a sentence for the user, and how to fix it."""

    code: str
    message: str
    hint: str | None = None

    @classmethod
    def of(cls, error: MailbridgeError) -> "Problem":
        return cls(code=error.code, message=error.message, hint=error.hint)


# What the agent's runtime was doing with its mail when the connection failed.
MailUse = Literal["reading", "sending"]


class LastError(Problem):
    at: datetime
    during: MailUse | None = Field(
        default=None,
        description="`reading` or `sending` when the agent's own use of its mail failed (a "
        "success of the same use, a passing test or a save of new servers or credentials "
        "clears it); none for a test or a sign-in.",
    )


class Degraded(Model):
    """New mail is not reaching the agent as it should, since `since`, and why (the
    connection itself may still work: a poll timed out, a push subscription failed to renew)."""

    problem: Problem
    of: Literal["look", "push"] = Field(
        description="What fails: looking at the inbox, or the provider's push (a watch or "
        "subscription that cannot be made or renewed: new mail then waits for the rounds)."
    )
    since: datetime
    failures: int = Field(ge=1, description="Failed attempts in a row.")


class InboxCounts(Model):
    # Bounded: a server's numbers are input too (and DynamoDB stores 38 digits at most).
    total: int = Field(ge=0, le=10**15)
    unread: int = Field(ge=0, le=10**15)


CheckName = Literal["imap", "smtp", "authorization", "mailbox", "permissions", "policy"]


class CheckResult(Model):
    name: CheckName
    ok: bool
    latency_ms: int
    error: Problem | None = None


class ConnectionTestResult(Model):
    ok: bool
    email: str | None = Field(
        description="The address the provider confirmed: the account's (OAuth), or the login "
        "the IMAP server accepted when it is an address."
    )
    login: str | None = Field(default=None, description="IMAP: the login name the server accepted.")
    inbox: InboxCounts | None
    checks: list[CheckResult]
    error: Problem | None = Field(description="The first failing check's problem, if any.")
    tested_at: datetime


class TokenRef(SecretRef):
    """An agent's OAuth tokens, and when their access token expires (not a secret): whether
    a refresh is due is known before anything is read."""

    expires_at: int  # epoch seconds


class StoredConfig(Model):
    """The email-config record of one agent, as kept in DynamoDB."""

    agent_id: str
    connection: Connection
    secret: SecretRef | None = None  # password or client secret; None: an inherited app
    secret_updated_at: datetime
    tokens: TokenRef | None = None  # once authorized
    status: Status
    last_error: LastError | None = None
    last_test: ConnectionTestResult | None = None
    # Since when this connection (these servers and login, this account) has been Connected:
    # new mail is what arrives after it. None until it first connects; a save of other
    # servers, login or account starts it again.
    connected_at: datetime | None = None
    degraded: Degraded | None = None  # new mail's delivery, while it fails
    version: int
    updated_at: datetime

    @property
    def addresses(self) -> list[str]:
        """The addresses the agent sends as: the connection's own, and an IMAP login that is
        an address (the server sends as it); none for an OAuth connection not yet signed in."""
        connection = self.connection
        if isinstance(connection, ImapConnection):
            login = [connection.username] if "@" in connection.username else []
            return list(dict.fromkeys([connection.email, *login]))
        return [connection.authorization.email] if connection.authorization else []

    @property
    def oauth_grant(self) -> str | None:
        """The OAuth grant the connection holds, "<provider>#<app>#<account's address>": at
        Google, revoking one agent's tokens ends it for every agent on that account and app.
        By address, as every authorization recorded one (some no account id)."""
        connection = self.connection
        if not isinstance(connection, OAuthConnection) or connection.authorization is None:
            return None
        authorization = connection.authorization
        return f"{connection.provider}#{authorization.client_id}#{authorization.email.lower()}"

    def with_status(
        self, status: Status, last_error: LastError | None, **changes: object
    ) -> "StoredConfig":
        """The record with this status recorded (and `changes`)."""
        update: dict[str, object] = {"status": status, "last_error": last_error, **changes}
        if status is Status.CONNECTED and update.get("connected_at", self.connected_at) is None:
            update["connected_at"] = datetime.now(UTC)
        return self.model_copy(update=update)
