"""Fake Google: its OAuth endpoints (authorize, token, revoke) with incremental consent, and
a Gmail API subset: the profile, the INBOX label, and messages (list, get as metadata or raw,
modify labels, send). Refresh tokens are not rotated, as at Google."""

from __future__ import annotations

import base64
import binascii
import copy
import html
import re
import secrets
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, ClassVar

from .base import (
    AccessToken,
    Account,
    ApiError,
    App,
    Code,
    FakeProvider,
    Grant,
    PathTest,
    Reply,
    Request,
    Route,
    StoredMessage,
    addresses,
    answers,
    json_reply,
    parse_message,
    preview,
    unsigned_jwt,
)

_GMAIL = "https://www.googleapis.com/auth/gmail."
_FULL_ACCESS = "https://mail.google.com/"
_METADATA = _GMAIL + "metadata"
# The scopes that may read each Gmail resource: any one of them.
_GMAIL_READ = {_GMAIL + "readonly", _GMAIL + "modify", _FULL_ACCESS}
_GMAIL_PROFILE = _GMAIL_READ | {_GMAIL + "compose", _GMAIL + "send"}
# Listing and getting messages also take gmail.metadata, which sees headers only.
_GMAIL_LIST = _GMAIL_READ | {_METADATA}
_GMAIL_MODIFY = {_GMAIL + "modify", _FULL_ACCESS}
_GMAIL_SEND = {_GMAIL + "send", _GMAIL + "compose", _GMAIL + "modify", _FULL_ACCESS}
_MESSAGES = "/gmail/v1/users/me/messages"
_MAX_RESULTS = 500
# The labels a client may add or remove (SENT and DRAFT only come with sending and drafting).
_MODIFIABLE_LABELS = {
    "INBOX",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "SPAM",
    "TRASH",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
}
_FORMATS = {"minimal", "metadata", "raw", "full"}
_SNIPPET_LENGTH = 200


class FakeGoogle(FakeProvider):
    """Google's OAuth endpoints (/o/oauth2/v2/auth, /token, /revoke) and Gmail's
    (/gmail/v1/users/me/...). Refresh tokens are not rotated, as at Google."""

    _INVALID_CLIENT: ClassVar[dict[str, Any]] = {"error_description": "Unauthorized"}
    _INVALID_CODE: ClassVar[dict[str, Any]] = {"error_description": "Bad Request"}
    _INVALID_REFRESH_TOKEN: ClassVar[dict[str, Any]] = {
        "error_description": "Token has been expired or revoked."
    }
    # The error objects of Google's APIs.
    _UNAUTHENTICATED: ClassVar[dict[str, Any]] = {
        "code": 401,
        "message": "Request had invalid authentication credentials.",
        "status": "UNAUTHENTICATED",
    }
    _INSUFFICIENT_SCOPE: ClassVar[dict[str, Any]] = {
        "code": 403,
        "message": "Request had insufficient authentication scopes.",
        "status": "PERMISSION_DENIED",
    }
    # Gmail throttles with 429, and with 403 and a rate limit's reason (usually without a
    # Retry-After); other reasons (a spent quota) in the same shape, with their messages.
    _THROTTLED: ClassVar[dict[int, dict[str, Any]]] = {
        429: {
            "code": 429,
            "message": "Too many concurrent requests for user.",
            "errors": [
                {
                    "message": "Too many concurrent requests for user.",
                    "domain": "global",
                    "reason": "rateLimitExceeded",
                }
            ],
            "status": "RESOURCE_EXHAUSTED",
        },
        403: {
            "code": 403,
            "message": "Rate Limit Exceeded",
            "errors": [
                {
                    "message": "Rate Limit Exceeded",
                    "domain": "usageLimits",
                    "reason": "rateLimitExceeded",
                }
            ],
            "status": "PERMISSION_DENIED",
        },
    }

    _REASONS: ClassVar[dict[str, str]] = {
        "rateLimitExceeded": "Rate Limit Exceeded",
        "userRateLimitExceeded": "User Rate Limit Exceeded",
        "dailyLimitExceeded": "Daily Limit Exceeded",
        "quotaExceeded": "Quota exceeded for quota metric 'Queries' and limit 'Queries per day'",
    }

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(cert, key)
        self.revoked_tokens: list[str] = []
        # What each (client, account) was granted before: incremental consent adds to it.
        self._granted: dict[tuple[str, str], set[str]] = {}
        # Where each page token handed out goes on: after the message with this sort key.
        self._page_tokens: dict[str, tuple[float, int]] = {}

    def routes(self) -> list[tuple[str, PathTest, Route]]:
        return [
            ("GET", lambda path: path == "/o/oauth2/v2/auth", self._authorize_route),
            ("POST", lambda path: path == "/token", self._token),
            ("POST", lambda path: path == "/revoke", self._revoke),
            (
                "GET",
                lambda path: path == "/gmail/v1/users/me/profile",
                self._api(_GMAIL_PROFILE, _profile),
            ),
            (
                "GET",
                lambda path: path == "/gmail/v1/users/me/labels/INBOX",
                self._api(_GMAIL_READ, _inbox_label),
            ),
            ("GET", re.compile(_MESSAGES), self._mail_api(_GMAIL_LIST, self._list)),
            ("POST", re.compile(_MESSAGES + "/send"), self._mail_api(_GMAIL_SEND, self._send)),
            ("GET", re.compile(_MESSAGES + "/([^/]+)"), self._mail_api(_GMAIL_LIST, self._get)),
            (
                "POST",
                re.compile(_MESSAGES + "/([^/]+)/modify"),
                self._mail_api(_GMAIL_MODIFY, self._modify),
            ),
        ]

    def _throttled(self, status: int, reason: str | None) -> dict[str, Any]:
        error = copy.deepcopy(self._THROTTLED[status])
        if reason is not None:
            message = self._REASONS[reason]
            error["message"] = message
            error["errors"] = [{"message": message, "domain": "usageLimits", "reason": reason}]
        return error

    def _new_message_id(self) -> str:
        return secrets.token_hex(8)

    def _new_thread_id(self, message_id: str) -> str:
        return message_id  # a Gmail thread is named after its first message

    # -- messages
    def _list(self, request: Request, token: AccessToken) -> Reply:
        query = request.query.get("q", "").strip()
        if query and _metadata_only(token):
            raise ApiError(_forbidden("Metadata scope does not support 'q' parameter"))
        if query not in {"", "is:unread"}:
            raise ApiError(_invalid("The fake supports q=is:unread only."))
        try:
            max_results = int(request.query.get("maxResults", "100"))
        except ValueError:
            raise ApiError(_invalid("Invalid value for maxResults")) from None
        if max_results < 1:
            raise ApiError(_invalid("Invalid value for maxResults"))
        wanted = set(request.query_all("labelIds"))
        # Spam and trash are left out unless asked for, by label or includeSpamTrash.
        hidden = set() if request.query.get("includeSpamTrash") == "true" else {"SPAM", "TRASH"}
        hidden -= wanted
        found = sorted(
            (
                held
                for held in token.account.mailbox
                if wanted <= _labels(held)
                and not hidden & _labels(held)
                and not (query == "is:unread" and held.read)
            ),
            key=lambda held: held.newest_first,
        )
        answer: dict[str, Any] = {}
        page_token = request.query.get("pageToken")
        if page_token is not None:
            cursor = self._page_tokens.get(page_token)
            if cursor is None:
                raise ApiError(_invalid("Invalid pageToken"))
            found = [held for held in found if held.newest_first > cursor]
        # Gmail caps the page at its maximum rather than refusing a larger one.
        page = found[: min(max_results, _MAX_RESULTS)]
        if page:  # an empty answer has no "messages" at all
            answer["messages"] = [{"id": held.id, "threadId": held.thread_id} for held in page]
        if len(found) > len(page):
            next_token = str(secrets.randbits(64))
            self._page_tokens[next_token] = page[-1].newest_first
            answer["nextPageToken"] = next_token
        answer["resultSizeEstimate"] = len(found)
        return json_reply(200, answer)

    def _get(self, request: Request, token: AccessToken) -> Reply:
        held = _find(token.account, request.path_args[0])
        form = request.query.get("format", "full").lower()
        if form not in _FORMATS:
            raise ApiError(_invalid(f"Invalid value at 'format' ({form})"))
        if form == "full":
            raise ApiError(_invalid("format=full is not faked: ask for metadata or raw."))
        if form == "raw" and _metadata_only(token):
            raise ApiError(_forbidden("Metadata scope doesn't allow format RAW"))
        message = held.parsed()
        answer: dict[str, Any] = {
            "id": held.id,
            "threadId": held.thread_id,
            "labelIds": sorted(_labels(held)),
            "snippet": "" if _metadata_only(token) else _snippet(held),
            "sizeEstimate": len(held.raw),
            "historyId": str(held.sequence),
            "internalDate": str(int(held.received_at.timestamp() * 1000)),
        }
        if form == "metadata":
            asked = {name.lower() for name in request.query_all("metadataHeaders")}
            headers = [
                {"name": name, "value": str(value)}
                for name, value in message.items()
                if not asked or name.lower() in asked
            ]
            answer["payload"] = {"mimeType": message.get_content_type(), "headers": headers}
        if form == "raw":
            # Padded base64url, which urlsafe_b64decode reads as it is.
            answer["raw"] = base64.urlsafe_b64encode(held.raw).decode()
        return json_reply(200, answer)

    def _modify(self, request: Request, token: AccessToken) -> Reply:
        held = _find(token.account, request.path_args[0])
        body = request.json_object()
        if body is None:
            raise ApiError(_invalid("Invalid JSON payload received."))
        changes = {key: body.get(key, []) for key in ("addLabelIds", "removeLabelIds")}
        for labels in changes.values():
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise ApiError(_invalid("Invalid JSON payload received."))
            for label in labels:
                if label not in _MODIFIABLE_LABELS:
                    raise ApiError(_invalid(f"Invalid label: {label}"))
        with self._lock:
            for label in changes["addLabelIds"]:
                if label == "UNREAD":
                    held.read = False
                else:
                    held.labels.add(label)
            for label in changes["removeLabelIds"]:
                if label == "UNREAD":
                    held.read = True
                else:
                    held.labels.discard(label)
        return json_reply(
            200, {"id": held.id, "threadId": held.thread_id, "labelIds": sorted(_labels(held))}
        )

    def _send(self, request: Request, token: AccessToken) -> Reply:
        body = request.json_object()
        if body is None:
            raise ApiError(_invalid("Invalid JSON payload received."))
        encoded = body.get("raw")
        if not isinstance(encoded, str) or not encoded:
            raise ApiError(
                _invalid(
                    "'raw' RFC822 payload message string or uploading message via /upload/* URL"
                    " required"
                )
            )
        raw = _decode_base64url(encoded)
        message = parse_message(raw)
        if not addresses(message, "To", "Cc", "Bcc"):
            raise ApiError(_invalid("Recipient address required"))
        # Gmail would quietly put the account's address in a From it may not send as; the
        # fake refuses it, so the test that sent it sees the mistake.
        senders = [address.lower() for _, address in addresses(message, "From")]
        if senders != [token.account.email.lower()]:
            raise ApiError(_invalid(f"From must be the account's address, {token.account.email}"))
        if "Message-ID" not in message:  # Gmail gives every message one
            domain = token.account.email.rpartition("@")[2]
            raw = f"Message-ID: {make_msgid(domain=domain)}\r\n".encode() + raw
        thread_id = body.get("threadId")
        held = self.hold(
            token.account,
            raw,
            folder="sentitems",
            labels={"SENT"},
            read=True,
            thread_id=_joined_thread(token.account, message, thread_id),
        )
        return json_reply(200, {"id": held.id, "threadId": held.thread_id, "labelIds": ["SENT"]})

    def _authorize_route(self, request: Request) -> Reply:
        scopes = request.query.get("scope", "").split()
        if request.query.get("include_granted_scopes") == "true" and self.accounts:
            earlier = self._granted.get(
                (request.query.get("client_id", ""), self.accounts[-1].email), set()
            )
            scopes = sorted(set(scopes) | earlier)
        return self._authorize(
            request, scopes, offline=request.query.get("access_type") == "offline"
        )

    def _code_params(self, code: str, granted: list[str], back: dict[str, str]) -> dict[str, str]:
        return {"code": code, "scope": " ".join(granted), **back}

    def _code_tokens(self, app: App, code: Code, form: dict[str, str]) -> Reply:
        self._granted[(app.client_id, code.account.email)] = set(code.scopes)
        answer = self._tokens(code.account, code.scopes, app)
        if code.offline:
            answer["refresh_token"] = self._issue_refresh_token(app, code.account, code.scopes)
        return json_reply(200, answer)

    def _refreshed_tokens(self, app: App, grant: Grant, form: dict[str, str]) -> Reply:
        asked = form.get("scope", "").split()
        if asked and not set(asked) <= set(grant.scopes):
            return json_reply(400, {"error": "invalid_scope", "error_description": "Bad Request"})
        self._count_refresh(form)
        return json_reply(200, self._tokens(grant.account, asked or grant.scopes, app))

    def _tokens(self, account: Account, scopes: list[str], app: App) -> dict[str, Any]:
        access_token, lifetime = self._issue(account, scopes)
        answer: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": lifetime - 1,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if "openid" in scopes:
            claims = self._id_claims("https://accounts.google.com", app, account)
            claims |= {"email": account.email, "email_verified": True}
            answer["id_token"] = unsigned_jwt(claims)
        return answer

    def _revoke(self, request: Request) -> Reply:
        token = request.form.get("token") or request.query.get("token", "")
        with self._lock:
            grant = self.refresh_tokens.pop(token, None)
            access = self.access_tokens.pop(token, None)
            if grant is None and access is None:
                return json_reply(
                    400, {"error": "invalid_token", "error_description": "Token expired or revoked"}
                )
            if grant is not None:
                # Revoking a refresh token revokes the access tokens issued with it.
                for key in [k for k, t in self.access_tokens.items() if t.account is grant.account]:
                    del self.access_tokens[key]
            self.revoked_tokens.append(token)
        return json_reply(200, {})


def _profile(account: Account) -> dict[str, Any]:
    return {
        "emailAddress": account.email,
        "messagesTotal": account.inbox_total,
        "threadsTotal": account.inbox_total,
        "historyId": "1000",
    }


def _inbox_label(account: Account) -> dict[str, Any]:
    return {
        "id": "INBOX",
        "name": "INBOX",
        "type": "system",
        "messagesTotal": account.inbox_total,
        "messagesUnread": account.inbox_unread,
        "threadsTotal": account.inbox_total,
        "threadsUnread": account.inbox_unread,
    }


def _error(status: int, message: str, reason: str, state: str) -> Reply:
    """An error in the shape of Google's APIs."""
    details = [{"message": message, "domain": "global", "reason": reason}]
    error = {"code": status, "message": message, "errors": details, "status": state}
    return json_reply(status, {"error": error})


def _invalid(message: str) -> Reply:
    return _error(400, message, "invalidArgument", "INVALID_ARGUMENT")


def _forbidden(message: str) -> Reply:
    return _error(403, message, "forbidden", "PERMISSION_DENIED")


def _metadata_only(token: AccessToken) -> bool:
    """Whether the token reads through gmail.metadata alone: headers and labels, no more."""
    return not _GMAIL_READ & set(token.scopes)


def _labels(held: StoredMessage) -> set[str]:
    return held.labels | ({"UNREAD"} if not held.read else set())


def _find(account: Account, message_id: str) -> StoredMessage:
    if not re.fullmatch(r"[0-9a-f]{16}", message_id):
        raise ApiError(_invalid("Invalid id value"))
    for held in account.mailbox:
        if held.id == message_id:
            return held
    raise ApiError(_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND"))


def _snippet(held: StoredMessage) -> str:
    # Gmail escapes the snippet as HTML text, apostrophes as &#39;.
    text = preview(held.parsed(), _SNIPPET_LENGTH)
    return html.escape(text, quote=False).replace('"', "&quot;").replace("'", "&#39;")


def _decode_base64url(encoded: str) -> bytes:
    """The bytes of base64url text (padded or not); anything else is refused as Google
    refuses a bytes field that does not decode."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", encoded):
        raise ApiError(_base64_refused(encoded))
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise ApiError(_base64_refused(encoded)) from None


def _base64_refused(encoded: str) -> Reply:
    return _invalid(
        f"Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed for"
        f' "{encoded[:40]}"'
    )


def _joined_thread(account: Account, message: EmailMessage, thread_id: Any) -> str | None:
    """The thread a sent message joins, as Gmail documents it: the one asked for, if it
    exists and holds a message this one answers; otherwise none, and it starts its own."""
    joins = isinstance(thread_id, str) and any(
        held.thread_id == thread_id and answers(message, held) for held in account.mailbox
    )
    return thread_id if joins else None
