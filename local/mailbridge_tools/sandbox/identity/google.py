"""Fake Google: its OAuth endpoints (authorize, token, revoke) with incremental consent, and
a Gmail API subset: the profile, the INBOX label, and messages (list, get as metadata or raw,
modify labels, send). Refresh tokens are not rotated, as at Google.

Gmail push too: each change of a mailbox is a history record with a new, higher history id
(history.list pages them, and answers 404 from before what it keeps), `users.watch` and
`users.stop`, and a watch's notifications pushed through the fake Pub/Sub (pubsub) to the
endpoint a test configures, with an OIDC token signed by the fake's key (its certificate at
/oauth2/v1/certs)."""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import html
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
from .pubsub import OidcSigner, Push, PushSubscription, post_push

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
_HISTORY_TYPES = {"messageAdded", "messageDeleted", "labelAdded", "labelRemoved"}
_FIRST_HISTORY_ID = 1000
_WATCH_LIFETIME_SECONDS = 7 * 24 * 3600
_TOPIC = re.compile(r"projects/[^/]+/topics/[^/]+")


@dataclass
class _Record:
    """One change of a mailbox: a message added (its labels then), or labels changed."""

    id: int
    kind: str  # one of _HISTORY_TYPES
    message: StoredMessage
    labels: set[str]  # the message's labels after the change
    changed: list[str] = field(default_factory=list)  # the labels added or removed


@dataclass
class _Watch:
    topic: str
    label_ids: set[str]
    include: bool  # labelFilterBehavior: notify for these labels (else for all others)
    expires_at: float


@dataclass
class _History:
    """An account's history: the records kept, the id of the newest change, and the oldest
    start id history.list still answers from."""

    current: int = _FIRST_HISTORY_ID
    oldest: int = _FIRST_HISTORY_ID
    records: list[_Record] = field(default_factory=list)
    watch: _Watch | None = None


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
        # What each (client, account subject) was granted before: incremental consent adds
        # to it.
        self._granted: dict[tuple[str, str], set[str]] = {}
        # Where each page token handed out goes on: after the message with this sort key.
        self._page_tokens: dict[str, tuple[float, int]] = {}
        # Each account's history (by the account object: two may share an address).
        self._histories: dict[int, _History] = {}
        # Where each history page token goes on: after the record with this id.
        self._history_tokens: dict[str, int] = {}
        # The most records a page of history holds: Gmail may answer fewer than asked.
        self.history_page_size = _MAX_RESULTS
        # Pub/Sub: the topics that exist (and whether Gmail may publish to each), the
        # push subscription a test configured, the key its tokens are signed with, and every
        # push delivered.
        self.topics: dict[str, bool] = {}
        self.push_subscription: PushSubscription | None = None
        self.signer = OidcSigner()
        self.pushes: list[Push] = []
        self._pushes_paused = threading.Event()

    def routes(self) -> list[tuple[str, PathTest, Route]]:
        return [
            ("GET", lambda path: path == "/o/oauth2/v2/auth", self._authorize_route),
            ("POST", lambda path: path == "/token", self._token),
            ("POST", lambda path: path == "/revoke", self._revoke),
            ("GET", lambda path: path == "/oauth2/v1/certs", self._certs),
            (
                "GET",
                lambda path: path == "/gmail/v1/users/me/profile",
                self._api(_GMAIL_PROFILE, self._profile),
            ),
            (
                "GET",
                lambda path: path == "/gmail/v1/users/me/history",
                self._mail_api(_GMAIL_LIST, self._history_list),
            ),
            (
                "POST",
                lambda path: path == "/gmail/v1/users/me/watch",
                self._mail_api(_GMAIL_LIST, self._watch),
            ),
            (
                "POST",
                lambda path: path == "/gmail/v1/users/me/stop",
                self._mail_api(_GMAIL_LIST, self._stop),
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
        unread_only, in_inbox, after = _search(query)
        max_results = _max_results(request, default=100)
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
                and not (unread_only and held.read)
                and not (in_inbox and "INBOX" not in held.labels)
                and not (after is not None and held.received_at.timestamp() <= after)
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
            before = _labels(held)
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
            after = _labels(held)
        if after - before:
            self._changed(token.account, "labelAdded", held, sorted(after - before))
        if before - after:
            self._changed(token.account, "labelRemoved", held, sorted(before - after))
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

    # -- history, watch and push
    def configure_push(
        self, *, topic: str, endpoint: str, audience: str, service_account: str
    ) -> None:
        """The deployment's Pub/Sub set up: `topic` exists, Gmail may publish to it, and its
        push subscription delivers to `endpoint` with tokens for `audience` and
        `service_account`."""
        self.topics[topic] = True
        self.push_subscription = PushSubscription(topic, endpoint, audience, service_account)

    def history_of(self, email: str) -> _History:
        return self._history(self.account(email))

    def watch_of(self, email: str) -> _Watch | None:
        """The account's live watch, if any."""
        watch = self.history_of(email).watch
        return watch if watch is not None and watch.expires_at > time.time() else None

    def forget_history(self, email: str) -> None:
        """Gmail keeps history for a limited time: from now on, history.list answers 404 for
        a start id older than the account's current one."""
        with self._lock:
            history = self.history_of(email)
            history.oldest = history.current
            history.records = []

    @contextmanager
    def pushes_lost(self) -> Iterator[None]:
        """Within the block, notifications are not pushed (Pub/Sub gave up, or Gmail dropped
        them over its one a second per user)."""
        self._pushes_paused.set()
        try:
            yield
        finally:
            self._pushes_paused.clear()

    def push_token(self, signer: OidcSigner | None = None, **claims: Any) -> str:
        """A token of the configured push subscription, with `claims` changed (None: left
        out), signed by `signer` (by default the fake's key)."""
        assert self.push_subscription is not None, "configure_push first"
        token = (signer or self.signer).sign(self.push_subscription.claims(**claims))
        self.secrets.add(token)
        return token

    def push_body(self, email: str, history_id: int | None = None) -> dict[str, Any]:
        """Pub/Sub's push body for a Gmail notification of `email`."""
        assert self.push_subscription is not None, "configure_push first"
        current = self.history_of(email).current if history_id is None else history_id
        return self.push_subscription.envelope({"emailAddress": email, "historyId": current})

    def hold(
        self,
        account: Account,
        raw: bytes,
        *,
        folder: str,
        labels: set[str],
        read: bool,
        thread_id: str | None,
        received_at: datetime.datetime | None = None,
    ) -> StoredMessage:
        held = super().hold(
            account,
            raw,
            folder=folder,
            labels=labels,
            read=read,
            thread_id=thread_id,
            received_at=received_at,
        )
        self._changed(account, "messageAdded", held, [])
        return held

    def _history(self, account: Account) -> _History:
        return self._histories.setdefault(id(account), _History())

    def _changed(
        self, account: Account, kind: str, held: StoredMessage, changed: list[str]
    ) -> None:
        """Records a change in the account's history (ids grow by uneven steps, as Gmail's
        do) and has the account's watch push a notification if it covers the message."""
        with self._lock:
            history = self._history(account)
            history.current += random.randint(1, 5)
            labels = _labels(held)
            history.records.append(_Record(history.current, kind, held, labels, changed))
            watch = history.watch
            current = history.current
        if watch is None or watch.expires_at <= time.time():
            return
        covered = bool(watch.label_ids & labels) if watch.label_ids else True
        if covered != watch.include or self._pushes_paused.is_set():
            return
        subscription = self.push_subscription
        if subscription is None or subscription.topic != watch.topic:
            return  # published, but no push subscription of ours on that topic
        body = subscription.envelope({"emailAddress": account.email, "historyId": current})
        token = self.push_token()
        self.pushes.append(Push(account.email, body, post_push(subscription.endpoint, body, token)))

    def _certs(self, request: Request) -> Reply:
        return Reply(
            200,
            json.dumps(self.signer.certs()),
            {"Content-Type": "application/json", "Cache-Control": "public, max-age=20000"},
        )

    def _profile(self, account: Account) -> dict[str, Any]:
        return {**_profile(account), "historyId": str(self._history(account).current)}

    def _history_list(self, request: Request, token: AccessToken) -> Reply:
        start_text = request.query.get("startHistoryId", "")
        if not start_text:
            raise ApiError(_invalid("Missing required parameter startHistoryId"))
        if not start_text.isdigit():
            raise ApiError(_invalid("Invalid value at 'start_history_id'"))
        kinds = set(request.query_all("historyTypes")) or _HISTORY_TYPES
        if not kinds <= _HISTORY_TYPES:
            raise ApiError(_invalid("Invalid value at 'history_types'"))
        max_results = _max_results(request, default=100)
        label = request.query.get("labelId")
        history = self._history(token.account)
        start = int(start_text)
        if start < history.oldest:
            raise ApiError(_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND"))
        after = start
        page_token = request.query.get("pageToken")
        if page_token is not None:
            if page_token not in self._history_tokens:
                raise ApiError(_invalid("Invalid pageToken"))
            after = self._history_tokens[page_token]
        with self._lock:
            current = history.current
            found = [
                record
                for record in history.records
                if record.id > after
                and record.kind in kinds
                and (label is None or label in record.labels)
            ]
        page = found[: min(max_results, self.history_page_size)]
        answer: dict[str, Any] = {"historyId": str(current)}
        if page:  # as messages.list, no "history" at all when there is none
            answer["history"] = [_history_record(record) for record in page]
        if len(found) > len(page):
            next_token = str(secrets.randbits(64))
            self._history_tokens[next_token] = page[-1].id
            answer["nextPageToken"] = next_token
        return json_reply(200, answer)

    def _watch(self, request: Request, token: AccessToken) -> Reply:
        body = request.json_object()
        if body is None:
            raise ApiError(_invalid("Invalid JSON payload received."))
        topic = body.get("topicName")
        if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
            raise ApiError(
                _invalid("Invalid topicName does not match projects/SOME_ANDROID_APP/topics/*")
            )
        label_ids = body.get("labelIds", [])
        if not isinstance(label_ids, list) or not all(isinstance(x, str) for x in label_ids):
            raise ApiError(_invalid("Invalid JSON payload received."))
        behavior = body.get("labelFilterBehavior", body.get("labelFilterAction", "include"))
        if behavior not in ("include", "exclude"):
            raise ApiError(_invalid("Invalid value at 'label_filter_behavior'"))
        if topic not in self.topics:
            raise ApiError(
                _error(404, f"Resource not found (resource={topic}).", "notFound", "NOT_FOUND")
            )
        if not self.topics[topic]:
            raise ApiError(
                _forbidden(
                    f"Error sending test message to Cloud PubSub {topic} : User not "
                    "authorized to perform this action."
                )
            )
        expires_at = time.time() + _WATCH_LIFETIME_SECONDS
        with self._lock:
            history = self._history(token.account)
            history.watch = _Watch(topic, set(label_ids), behavior == "include", expires_at)
            current = history.current
        return json_reply(
            200, {"historyId": str(current), "expiration": str(int(expires_at * 1000))}
        )

    def _stop(self, request: Request, token: AccessToken) -> Reply:
        with self._lock:
            self._history(token.account).watch = None
        return Reply(204)

    def _authorize_route(self, request: Request) -> Reply:
        scopes = request.query.get("scope", "").split()
        if request.query.get("include_granted_scopes") == "true" and self.accounts:
            earlier = self._granted.get(
                (request.query.get("client_id", ""), self.accounts[-1].subject), set()
            )
            scopes = sorted(set(scopes) | earlier)
        return self._authorize(
            request, scopes, offline=request.query.get("access_type") == "offline"
        )

    def _code_params(self, code: str, granted: list[str], back: dict[str, str]) -> dict[str, str]:
        return {"code": code, "scope": " ".join(granted), **back}

    def withdraw_scopes(self, email: str, scopes: list[str]) -> None:
        super().withdraw_scopes(email, scopes)
        subject = self.account(email).subject
        with self._lock:  # no longer among what incremental consent adds
            for (_, granted_to), granted in self._granted.items():
                if granted_to == subject:
                    granted.difference_update(scopes)

    def _code_tokens(self, app: App, code: Code, form: dict[str, str]) -> Reply:
        self._granted[(app.client_id, code.account.subject)] = set(code.scopes)
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
                # Revoking a refresh token ends the grant: the account's every token for the
                # app (and here its access tokens for any app).
                for key, other in list(self.refresh_tokens.items()):
                    if (other.client_id, other.account) == (grant.client_id, grant.account):
                        del self.refresh_tokens[key]
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


def _search(query: str) -> tuple[bool, bool, int | None]:
    """What a messages.list `q` asks, of what the fake understands: is:unread, in:inbox and
    after:<epoch seconds> (Gmail's search takes these among many more)."""
    unread_only, in_inbox, after = False, False, None
    for term in query.split():
        if term == "is:unread":
            unread_only = True
        elif term == "in:inbox":
            in_inbox = True
        elif term.startswith("after:") and term[6:].isdigit():
            after = int(term[6:])
        else:
            raise ApiError(_invalid("The fake supports is:unread, in:inbox and after:<epoch>."))
    return unread_only, in_inbox, after


def _max_results(request: Request, *, default: int) -> int:
    """The page size asked for (Gmail caps a larger one at its maximum rather than refuse)."""
    try:
        max_results = int(request.query.get("maxResults", str(default)))
    except ValueError:
        raise ApiError(_invalid("Invalid value for maxResults")) from None
    if max_results < 1:
        raise ApiError(_invalid("Invalid value for maxResults"))
    return max_results


def _history_record(record: _Record) -> dict[str, Any]:
    message = {"id": record.message.id, "threadId": record.message.thread_id}
    labelled = {**message, "labelIds": sorted(record.labels)}
    answer: dict[str, Any] = {"id": str(record.id), "messages": [message]}
    if record.kind == "messageAdded":
        answer["messagesAdded"] = [{"message": labelled}]
    elif record.kind == "messageDeleted":
        answer["messagesDeleted"] = [{"message": labelled}]
    else:
        key = "labelsAdded" if record.kind == "labelAdded" else "labelsRemoved"
        answer[key] = [{"message": labelled, "labelIds": record.changed}]
    return answer


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
