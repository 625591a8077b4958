"""What the agents' OAuth grants ask for and must hold, per provider: the scopes sign-in
requests, and the permissions (any one of their scopes) reading and sending need. Plain data
and checks, which the Email tab's view and every use of a mailbox apply without loading the
token path."""

from typing import NamedTuple

from ..core.errors import ErrorCode, ProviderError

# What email needs and nothing more (the original asked for calendar, drive, contacts...).
# MSAL adds offline_access, openid and profile itself and refuses them in its scope lists.
MICROSOFT_SCOPES = ["Mail.ReadWrite", "Mail.Send", "User.Read"]
_GMAIL = "https://www.googleapis.com/auth/gmail."
# gmail.modify: read, send, and mark read or unread; nothing can be deleted for good.
GOOGLE_SCOPES = ["openid", "email", _GMAIL + "modify"]


class Permission(NamedTuple):
    """A capability the agent needs and the scopes that grant it (any one suffices).
    `sends`: without it the agent still receives, so its absence is a warning, not an
    error."""

    label: str
    granted_by: frozenset[str]
    ask_for: str
    sends: bool = False


# Granted scopes come back qualified from Microsoft (https://graph.microsoft.com/Mail.Send);
# they are compared by their last path segment.
REQUIRED_PERMISSIONS: dict[str, list[Permission]] = {
    "microsoft": [
        Permission("reading mail", frozenset({"Mail.ReadWrite", "Mail.Read"}), "Mail.ReadWrite"),
        Permission("sending mail", frozenset({"Mail.Send"}), "Mail.Send", sends=True),
    ],
    "google": [
        Permission(
            "reading mail",
            frozenset({"gmail.readonly", "gmail.modify", "mail.google.com"}),
            _GMAIL + "modify",
        ),
        Permission(
            "sending mail",
            frozenset({"gmail.send", "gmail.compose", "gmail.modify", "mail.google.com"}),
            _GMAIL + "modify",
            sends=True,
        ),
    ],
}


def requested_scopes(provider: str) -> list[str]:
    """The scopes shown to the user: what authorization asks for, MSAL's additions included."""
    if provider == "microsoft":
        return [*MICROSOFT_SCOPES, "offline_access"]
    return list(GOOGLE_SCOPES)


def _scope_name(scope: str) -> str:
    return scope.rstrip("/").rsplit("/", 1)[-1].lower()


def missing_permissions(provider: str, granted_scopes: list[str]) -> list[Permission]:
    granted = {_scope_name(scope) for scope in granted_scopes}
    return [
        permission
        for permission in REQUIRED_PERMISSIONS[provider]
        if not granted & {name.lower() for name in permission.granted_by}
    ]


def permission_problem(provider: str, missing: list[Permission]) -> ProviderError:
    return ProviderError(
        ErrorCode.PERMISSION_MISSING,
        provider,
        detail=" or ".join(permission.label for permission in missing),
        scope=", ".join(permission.ask_for for permission in missing),
    )


def grant_problems(
    provider: str, granted_scopes: list[str]
) -> tuple[ProviderError | None, ProviderError | None]:
    """What a grant lacks of what is required now: an error when the agent cannot use its
    mailbox (it cannot read it), else a warning when it can receive but not send. Computed
    at each use from the required set, so requirements that grow reach every grant."""
    missing = missing_permissions(provider, granted_scopes)
    if not missing:
        return None, None
    if all(permission.sends for permission in missing):
        scope = ", ".join(permission.ask_for for permission in missing)
        return None, ProviderError(ErrorCode.SEND_PERMISSION_MISSING, provider, scope=scope)
    return permission_problem(provider, missing), None
