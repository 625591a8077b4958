"""Every error the service raises on purpose: one family under `MailbridgeError`, each error
with a stable code from `ErrorCode`.

    MailbridgeError          code, message, and optionally field, hint, retry_after
    ├── InvalidField         a request field breaks a rule (always names the field)
    ├── Unavailable          a dependency of ours failed or is not set up; a retry may work
    ├── StaleWrite           a stored record changed between our read and our write
    ├── LimitReached         a counting window is full (rate limits, sending limits)
    ├── ProviderError        Microsoft or Google failed or refused
    └── MailServerError      an IMAP or SMTP server failed or refused

An error says what went wrong, never how HTTP answers it: `mailbridge.http.errors` alone maps
codes to statuses. Messages are written for the person in the Email tab and never carry a
secret or a server's raw text (the original product echoed it, which turned its connection
test into a password oracle).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from .settings import settings
from .types import PROVIDER_NAMES

if TYPE_CHECKING:
    from .windows import Window


class ErrorCode(StrEnum):
    """The stable, machine-readable codes: API answers, connection-test checks and an agent's
    last error all use them (docs/api.md: Errors)."""

    # The request itself
    INVALID_JSON = "invalid_json"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    UNAUTHORIZED = "unauthorized"
    ADMIN_REQUIRED = "admin_required"
    NOT_FOUND = "not_found"
    AGENT_NOT_FOUND = "agent_not_found"
    CLIENT_ORG_NOT_FOUND = "client_org_not_found"
    CLIENT_ORG_MISSING = "client_org_missing"  # an agent's, gone since it was registered
    OAUTH_APP_NOT_FOUND = "oauth_app_not_found"
    MESSAGE_NOT_FOUND = "message_not_found"
    FOLDER_NOT_FOUND = "folder_not_found"
    ATTACHMENT_NOT_FOUND = "attachment_not_found"
    AGENT_TOKEN_NOT_ALLOWED = "agent_token_not_allowed"
    # What is stored does not allow it
    NOT_CONFIGURED = "not_configured"
    NOT_OAUTH = "not_oauth"
    NOT_AUTHORIZED = "not_authorized"
    CONCURRENT_UPDATE = "concurrent_update"
    VERSION_MISMATCH = "version_mismatch"
    SECRET_MISSING = "secret_missing"
    RECIPIENTS_NOT_ALLOWED = "recipients_not_allowed"
    RATE_LIMITED = "rate_limited"
    SENDING_LIMIT_REACHED = "sending_limit_reached"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    REQUEST_IN_PROGRESS = "request_in_progress"
    ATTACHMENT_TOO_LARGE = "attachment_too_large"
    # Our side
    STORAGE_UNAVAILABLE = "storage_unavailable"
    TOKEN_REFRESH_BUSY = "token_refresh_busy"
    OAUTH_NOT_CONFIGURED = "oauth_not_configured"
    INTERNAL_ERROR = "internal_error"
    # The OAuth callback
    STATE_INVALID = "state_invalid"
    STATE_EXPIRED = "state_expired"
    AUTHORIZATION_OUTDATED = "authorization_outdated"
    ACCOUNT_MISMATCH = "account_mismatch"  # a re-authorization signed in another account
    # OAuth providers (ProviderError)
    REAUTHORIZATION_REQUIRED = "reauthorization_required"
    OAUTH_CLIENT_INVALID = "oauth_client_invalid"
    PERMISSION_MISSING = "permission_missing"
    SEND_PERMISSION_MISSING = "send_permission_missing"  # also a view's warning
    AUTHORIZATION_DENIED = "authorization_denied"
    AUTHORIZATION_FAILED = "authorization_failed"
    TENANT_UNKNOWN = "tenant_unknown"
    OAUTH_APP_MISSING = "oauth_app_missing"
    OAUTH_APP_REMOVED = "oauth_app_removed"
    EMAIL_DOMAIN_NOT_ALLOWED = "email_domain_not_allowed"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_THROTTLED = "provider_throttled"
    # New mail's push: a watch (Gmail) or subscription (Graph) the provider refuses
    PUSH_TOPIC_REFUSED = "push_topic_refused"
    SUBSCRIPTION_REFUSED = "subscription_refused"
    # Either a provider or a mail server
    TIMEOUT = "timeout"
    CONNECTION_FAILED = "connection_failed"
    TLS_CERTIFICATE_INVALID = "tls_certificate_invalid"
    # Mail servers (MailServerError)
    AUTH_FAILED = "auth_failed"
    AUTH_UNAVAILABLE = "auth_unavailable"
    CONNECTION_REFUSED = "connection_refused"
    DNS_FAILURE = "dns_failure"
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    STARTTLS_UNAVAILABLE = "starttls_unavailable"
    ADDRESS_NOT_ALLOWED = "address_not_allowed"
    SERVER_ERROR = "server_error"
    SERVER_BUSY = "server_busy"
    RECIPIENTS_REFUSED = "recipients_refused"
    MESSAGE_REFUSED = "message_refused"
    # The push routes: a Gmail push whose token is not the configured subscription's, a
    # body that is not one of the provider's notifications
    PUSH_UNAUTHORIZED = "push_unauthorized"
    NOTIFICATION_INVALID = "notification_invalid"


class Cause(StrEnum):
    """What a provider or mail server said, when it says more than its error's code: the
    code stays (what a client does about it), the cause picks our sentence and hint. Each
    value is the provider's own code for it (ours for a shared app's, whose fix is there)."""

    # Exchange Online refusing passwords for SMTP AUTH: turned off for the tenant or the
    # mailbox (or by security defaults), and basic authentication removed altogether
    SMTP_AUTH_DISABLED = "535 5.7.139"
    BASIC_AUTH_UNSUPPORTED = "550 5.7.30"
    # Ours, not a server's code: a login or password beyond ASCII, which only AUTH PLAIN
    # (UTF-8, RFC 4616) can carry, to a server that does not offer it
    UTF8_LOGIN_UNSUPPORTED = "utf8_login_unsupported"
    # Microsoft Entra ID at the token endpoint
    MFA_REQUIRED = "AADSTS50076"
    MFA_ENROLMENT_REQUIRED = "AADSTS50079"
    CONSENT_MISSING = "AADSTS65001"
    # The token endpoint refusing the app's own credentials: its secret expired (Entra), or
    # is wrong or deleted (invalid_client, either provider); a shared app's refused secret
    # is fixed in the shared app, not in the agent
    CLIENT_SECRET_EXPIRED = "AADSTS7000222"
    CLIENT_SECRET_REFUSED = "invalid_client"
    SHARED_APP_SECRET_REFUSED = "shared_app_secret_refused"
    # Google's refresh token expired or revoked
    GOOGLE_GRANT_ENDED = "invalid_grant"


class MailbridgeError(Exception):
    """The base of the family. `str(error)` is the message: safe to show and to log."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field  # the request field at fault, dotted (`imap.port`)
        self.hint = hint  # how to fix it
        self.retry_after = retry_after  # seconds after which trying again may work


class InvalidField(MailbridgeError):
    """Well-formed input that breaks a rule, always naming the field."""

    def __init__(self, field: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(ErrorCode.INVALID_FIELD, message, field=field, hint=hint)


class InvalidFields(MailbridgeError):
    """Several rules a request breaks, each naming its field: the first is the error itself,
    and the API lists them all, so that a form marks every field at once."""

    problems: list[MailbridgeError]

    def __init__(self, problems: list[MailbridgeError]) -> None:
        flat = [
            each
            for problem in problems
            for each in (problem.problems if isinstance(problem, InvalidFields) else [problem])
        ]
        # The form's own rules first: the status is theirs whatever the fields' order.
        flat.sort(key=lambda problem: problem.code not in _FORM_RULES)
        first = flat[0]
        super().__init__(first.code, first.message, field=first.field, hint=first.hint)
        self.problems = flat


_FORM_RULES = {ErrorCode.INVALID_FIELD, ErrorCode.MISSING_FIELD, ErrorCode.UNKNOWN_FIELD}


def refuse_all(problems: list[MailbridgeError]) -> None:
    """Raise what `problems` holds: one as itself, several at once."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InvalidFields(problems)


class Unavailable(MailbridgeError):
    """A dependency of ours (DynamoDB, Secrets Manager, a lock) failed, or is not set up."""


class StaleWrite(MailbridgeError):
    """The stored record changed between our read and our conditional write: whoever wrote
    it decides what happens next, so a caller re-reads and tries again, or says what changed
    in its own words."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.CONCURRENT_UPDATE, "The stored record changed meanwhile.")


class LimitReached(MailbridgeError):
    """A counting window is full; `scope` says whose count it is (a partition of counters).
    Always caught: callers answer it in their own words and code (a test's rate limit, an
    organization's sending limit)."""

    def __init__(self, scope: str, window: Window) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, f"At most {window.limit} per {window.name}.")
        self.scope = scope
        self.window = window

    def refusal(self, now: datetime, message: str, otherwise: str = "") -> MailbridgeError:
        """The caller's answer: its words, and when to try again (`otherwise`: what else the
        user can do, as ", or ...")."""
        retry_after = self.window.retry_after(now)
        return MailbridgeError(
            ErrorCode.RATE_LIMITED,
            message,
            hint=f"Try again in {retry_after} seconds{otherwise}.",
            retry_after=retry_after,
        )


def agent_not_found(agent_id: str) -> MailbridgeError:
    # Also answered for agents of other organizations: their existence is not disclosed.
    return MailbridgeError(
        ErrorCode.AGENT_NOT_FOUND, f"No agent {agent_id!r} in your organization."
    )


# A write that re-reads and tries again when another write won the race: how many times.
WRITE_ATTEMPTS = 3


def kept_changing(what: str) -> MailbridgeError:
    """Every try of a write lost its race to another one."""
    return MailbridgeError(
        ErrorCode.CONCURRENT_UPDATE,
        f"The {what} kept changing while this request was writing it.",
        hint="Reload the page and try again.",
    )


# ---- OAuth providers -------------------------------------------------------------------

# By code, and by cause where the provider said more (a cause's words fit every code it is
# raised with).
_PROVIDER_CATALOGUE: dict[ErrorCode | Cause, tuple[str, str]] = {
    ErrorCode.REAUTHORIZATION_REQUIRED: (
        "{provider} no longer accepts this agent's authorization: it expired or was revoked.",
        "Click Re-authorize in the Email tab and sign in with the agent's account again.",
    ),
    ErrorCode.OAUTH_CLIENT_INVALID: (
        "{provider} rejected the app's client ID or client secret.",
        "Copy the current client ID and secret from the app registration and save them "
        "(client secrets expire after the lifetime chosen when they were created).",
    ),
    ErrorCode.PERMISSION_MISSING: (
        "The authorization does not allow {detail}.",
        "Add the permission to the app ({scope}), then click Re-authorize and accept it.",
    ),
    ErrorCode.SEND_PERMISSION_MISSING: (
        "The authorization allows reading this mailbox but not sending from it: the agent "
        "can receive but not send.",
        "Click Re-authorize in the Email tab and grant the permission to send mail ({scope}).",
    ),
    ErrorCode.AUTHORIZATION_DENIED: (
        "The sign-in was cancelled or the requested permissions were refused.",
        "Click Authorize again and accept the permissions. In some organizations an "
        "administrator must grant consent first.",
    ),
    ErrorCode.AUTHORIZATION_FAILED: (
        "{provider} could not complete the sign-in{detail}.",
        "Check that the app's redirect URI is exactly {redirect_uri}, then Authorize again.",
    ),
    ErrorCode.TENANT_UNKNOWN: (
        "{provider} does not know the directory (tenant) {detail}.",
        "Check the tenant: the directory (tenant) ID or a verified domain of the app's "
        "directory, or organizations or common for a multi-tenant app.",
    ),
    ErrorCode.OAUTH_APP_MISSING: (
        "No {provider} OAuth app is available for this agent.",
        "Enter the app's client ID and secret, or ask an organization admin to register the "
        "organization's shared app.",
    ),
    ErrorCode.OAUTH_APP_REMOVED: (
        "The organization's shared {provider} OAuth app this agent used was removed.",
        "Ask an organization admin to register it again, or enter an app's client ID and "
        "secret; then click Authorize.",
    ),
    ErrorCode.EMAIL_DOMAIN_NOT_ALLOWED: (
        "{detail}",
        "Sign in with the agent's own mailbox in the client organization's domain.",
    ),
    ErrorCode.PROVIDER_ERROR: (
        "{provider} answered with an unexpected error.",
        "Try again in a few minutes; if it persists, check the provider's status page.",
    ),
    ErrorCode.PROVIDER_THROTTLED: (
        "{provider} asks this mailbox to slow down.",
        "Retry after the seconds Retry-After says; nothing was done this time.",
    ),
    # New mail from Microsoft Graph
    ErrorCode.SUBSCRIPTION_REFUSED: (
        "{provider} refused to notify this service of the inbox's new mail.",
        "Microsoft validates the notification route when it subscribes: the stack's "
        "PublicBaseUrl must be the API's public https origin, and POST "
        "/api/engine/push/microsoft must be reachable from the internet. The daily renewal "
        "round tries again.",
    ),
    ErrorCode.MESSAGE_REFUSED: (
        "{provider} refused the message{detail}.",
        "Check the recipients and the attachments' size and kind.",
    ),
    ErrorCode.TIMEOUT: (
        "{provider} did not answer within {timeout:g} seconds.",
        "Try again in a few minutes.",
    ),
    ErrorCode.CONNECTION_FAILED: (
        "Could not reach {provider}.",
        "Check the deployment's outbound network access, then try again.",
    ),
    ErrorCode.TLS_CERTIFICATE_INVALID: (
        "The TLS certificate of {provider}'s endpoint could not be verified.",
        "Check the deployment's provider endpoint settings; certificates are always verified.",
    ),
    # Gmail push: the deployment's setup, not the agent's
    ErrorCode.PUSH_TOPIC_REFUSED: (
        "{provider} refused to announce new mail to the deployment's Pub/Sub topic.",
        "The deployment's GmailPushTopic must name an existing topic on which "
        "gmail-api-push@system.gserviceaccount.com has the Pub/Sub Publisher role. "
        "Meanwhile new mail is found by the daily round only.",
    ),
    Cause.MFA_REQUIRED: (
        "{provider} now requires multi-factor authentication for this account (AADSTS50076), "
        "which the stored authorization cannot give.",
        "Click Re-authorize and sign in with the agent's account, completing the "
        "multi-factor prompt. If it comes back, a Conditional Access policy asks for it "
        "again (a sign-in frequency, another location): an Entra ID admin can adjust it.",
    ),
    Cause.MFA_ENROLMENT_REQUIRED: (
        "{provider} requires this account to register for multi-factor authentication "
        "(AADSTS50079) before it may be used.",
        "Sign in as the agent's account at https://aka.ms/mfasetup and register a "
        "verification method, then click Re-authorize.",
    ),
    Cause.CONSENT_MISSING: (
        "{provider} has no consent for the app to use this mailbox (AADSTS65001): it was "
        "never given for these permissions, or an administrator removed it.",
        "An Entra ID admin grants it (Enterprise applications > the app > Permissions > "
        "Grant admin consent), or the account accepts the permissions when signing in; "
        "then click Re-authorize.",
    ),
    Cause.CLIENT_SECRET_EXPIRED: (
        "{provider} refused the app's client secret: it expired (AADSTS7000222).",
        "Create a new client secret for the app (Azure portal: App registrations > the app > "
        "Certificates & secrets) and save it in the Email tab; no re-authorization is needed.",
    ),
    Cause.CLIENT_SECRET_REFUSED: (
        "{provider} refused the app's client ID or client secret (invalid_client): the "
        "secret is wrong, expired or was deleted.",
        "Create a new client secret in the app registration (Azure: Certificates & secrets; "
        "Google Cloud console: Credentials) and save it with the client ID in the Email tab; "
        "no re-authorization is needed.",
    ),
    Cause.SHARED_APP_SECRET_REFUSED: (
        "{provider} refused the client secret of the organization's shared app this agent "
        "uses: it expired or was deleted (invalid_client).",
        "An organization admin rotates the client secret (Azure: App registrations > the "
        "app > Certificates & secrets; Google Cloud console: Credentials) and saves the new "
        "one in the shared app; every agent using it works again, with no re-authorization.",
    ),
    Cause.GOOGLE_GRANT_ENDED: (
        "{provider} ended this agent's authorization: its refresh token expired or was "
        "revoked (invalid_grant).",
        "Click Re-authorize and sign in with the agent's Google account. Google ends an "
        "authorization when the account's password changes, when its access is removed "
        "in the Google Account's security settings, after 6 months unused, and after 7 days "
        "while the OAuth app's publishing status is Testing (publish it to stop that).",
    ),
}


class ProviderError(MailbridgeError):
    """Microsoft or Google failed or refused, in our own words (never the provider's raw
    text): the cause's sentences if it said one, else the code's; `detail` and `scope` fill
    them."""

    def __init__(
        self,
        code: ErrorCode,
        provider: str,
        *,
        cause: Cause | None = None,
        detail: str = "",
        scope: str = "",
        retry_after: int | None = None,
    ) -> None:
        message, hint = _PROVIDER_CATALOGUE[cause or code]
        values = {
            "provider": PROVIDER_NAMES[provider],
            "detail": detail,
            "scope": scope,
            "timeout": settings().provider_timeout_seconds,
            "redirect_uri": settings().oauth_redirect_uri,
        }
        super().__init__(
            code, message.format(**values), hint=hint.format(**values), retry_after=retry_after
        )
        self.cause = cause


# ---- mail servers ----------------------------------------------------------------------

# By code, and by cause where the server said more.
_MAIL_CATALOGUE: dict[ErrorCode | Cause, tuple[str, str]] = {
    ErrorCode.AUTH_FAILED: (
        "{proto} server {server} rejected the username or password.",
        "Regenerate the app password and paste it again. Use an app password, not the "
        "account password: most providers require one when 2-step verification is on.",
    ),
    ErrorCode.AUTH_UNAVAILABLE: (
        "{proto} server {server} does not offer password login.",
        "The provider may have turned off password access for this account; use its OAuth "
        "connection method if there is one.",
    ),
    ErrorCode.CONNECTION_REFUSED: (
        "Nothing accepted a connection at {server}.",
        "Check the host and port. The usual ports are {ports}.",
    ),
    ErrorCode.CONNECTION_FAILED: (
        "Could not reach {server}.",
        "Check the host and port, and that outgoing {proto} traffic is allowed by firewalls.",
    ),
    ErrorCode.TIMEOUT: (
        "{server} did not answer within {timeout:g} seconds.",
        "Check the host and port; a firewall that silently drops {proto} traffic looks like this.",
    ),
    ErrorCode.DNS_FAILURE: (
        "The host name of {server} could not be resolved.",
        "Check the spelling of the {proto} server host.",
    ),
    ErrorCode.TLS_CERTIFICATE_INVALID: (
        "The TLS certificate of {server} could not be verified.",
        "Check that the host is the provider's own name (the certificate must match it). "
        "Certificates are always verified; a self-signed server needs a trusted CA.",
    ),
    ErrorCode.TLS_HANDSHAKE_FAILED: (
        "The TLS handshake with {server} failed.",
        "Check the security setting: TLS for ports {tls_ports}, STARTTLS for {starttls_ports}.",
    ),
    ErrorCode.STARTTLS_UNAVAILABLE: (
        "{proto} server {server} does not offer STARTTLS, so nothing was sent: the password "
        "would have travelled unencrypted.",
        "Use the implicit-TLS port ({tls_ports}) with security TLS.",
    ),
    ErrorCode.ADDRESS_NOT_ALLOWED: (
        "{server} resolves to a private, loopback or reserved address, which this service "
        "does not connect to.",
        "Use the provider's public host name. A self-hosted server on a private network "
        "needs the deployment's AllowPrivateMailServers setting.",
    ),
    ErrorCode.SERVER_ERROR: (
        "{proto} server {server} answered with an unexpected error.",
        "Try again in a few minutes; if it persists, check the provider's status page.",
    ),
    ErrorCode.SERVER_BUSY: (
        "{proto} server {server} asked to try again later.",
        "It is busy, or limiting this account, for now: try again after the seconds "
        "Retry-After says. A send refused this way did not leave.",
    ),
    ErrorCode.RECIPIENTS_REFUSED: (
        "{proto} server {server} refused recipients: {detail}.",
        "Check these addresses; nothing was sent.",
    ),
    ErrorCode.MESSAGE_REFUSED: (
        "{proto} server {server} refused the message.",
        "Check the attachments' size and kind, and that the account may send from its address.",
    ),
    Cause.UTF8_LOGIN_UNSUPPORTED: (
        "{proto} server {server} cannot take a login or password with characters beyond "
        "ASCII: it does not offer AUTH PLAIN, the one way to send them.",
        "Use a password of ASCII letters, digits and punctuation (an app password is), or ask "
        "the mail provider whether its server offers AUTH PLAIN.",
    ),
    Cause.SMTP_AUTH_DISABLED: (
        "{proto} server {server} refused password login for this mailbox (5.7.139): "
        "Exchange Online has SMTP AUTH turned off for it or its organization, or security "
        "defaults block it.",
        "A new app password will not help: use the Microsoft OAuth connection method. "
        "Exchange Online turns SMTP AUTH with passwords off by default at the end of "
        "December 2026; until Microsoft removes it, a Microsoft 365 admin can still turn it "
        "on for the mailbox (Authenticated SMTP).",
    ),
    Cause.BASIC_AUTH_UNSUPPORTED: (
        "{proto} server {server} no longer accepts passwords (basic authentication) for "
        "sending (5.7.30).",
        "A new app password will not help: use the Microsoft OAuth connection method.",
    ),
}
_PORTS = {"IMAP": ("993", "143"), "SMTP": ("465", "587")}


class MailServerError(MailbridgeError):
    """An IMAP or SMTP server failed or refused, in our own words (never the server's text):
    the cause's sentences if it said one, else the code's; `detail` fills them."""

    def __init__(
        self,
        code: ErrorCode,
        protocol: str,
        host: str,
        port: int,
        *,
        cause: Cause | None = None,
        detail: str = "",
        retry_after: int | None = None,
        field: str | None = None,
    ) -> None:
        tls_port, starttls_port = _PORTS[protocol]
        values = {
            "proto": protocol,
            "server": f"{host}:{port}",
            "timeout": settings().mail_timeout_seconds,
            "tls_ports": tls_port,
            "starttls_ports": starttls_port,
            "ports": f"{tls_port} (TLS) and {starttls_port} (STARTTLS)",
            "detail": detail,
        }
        message, hint = _MAIL_CATALOGUE[cause or code]
        super().__init__(
            code,
            message.format(**values),
            field=field,
            hint=hint.format(**values),
            retry_after=retry_after,
        )
        self.protocol = protocol
