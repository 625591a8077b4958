"""Fake Microsoft: Entra ID's v2.0 endpoints under a tenant (discovery, authorize, token) and
a Microsoft Graph subset: /v1.0/me, the inbox folder, and messages (list, get, MIME, mark
read, drafts from MIME or JSON, replies, attachments, send, delete). Each refresh hands out a
new refresh token and leaves the used one valid, as at Microsoft.

Message ids come in two forms, as at Graph: immutable ones (never change) only for requests
with `Prefer: IdType="ImmutableId"`, regular ones otherwise, which change when the message
moves to another folder (a sent draft, say). Both are accepted in paths; every mail request
is recorded with whether it asked for immutable ids (`mail_requests`).

Graph's change tracking too: subscriptions to change notifications (created only once their
notification URLs answer the validation request, renewed, deleted), the change notification
each delivered message causes, lifecycle notifications when a test asks (graph_changes), and
the message delta query with its opaque state tokens, which a test can make expire."""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import html
import json
import operator
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

from .base import (
    AccessToken,
    Account,
    ApiError,
    App,
    Code,
    FakeProvider,
    Grant,
    MailRoute,
    PathTest,
    Reply,
    Request,
    Route,
    StoredMessage,
    addresses,
    b64url,
    body_text,
    html_page,
    json_reply,
    parse_message,
    preview,
    unsigned_jwt,
)
from .graph_changes import (
    CHANGE_TYPES,
    LIFECYCLE_EVENTS,
    MAX_SUBSCRIPTION_MINUTES,
    Delivery,
    GraphSubscription,
    endpoint_allowed,
    notify,
    validate,
)

_GRAPH = "https://graph.microsoft.com/"
# The scopes that may read each Graph resource: any one of them.
_USER_READ = {"User.Read", "User.ReadBasic.All"}
_MAIL_READ = {"Mail.Read", "Mail.ReadWrite"}
_MAIL_WRITE = {"Mail.ReadWrite"}
_MAIL_SEND = {"Mail.Send"}
_MESSAGES = "/v1.0/me/messages"
_IMMUTABLE = "AAkALg"  # how immutable ids begin...
_REGULAR = "AAMk"  # ...and regular ones
# Graph's well-known folder names; the fake's mail is in the first three.
_FOLDERS = ("inbox", "sentitems", "drafts", "deleteditems", "archive", "junkemail")
_DEFAULT_TOP, _MAX_TOP = 10, 1000
_MAX_SKIP = 2**31 - 1  # $skip is an OData Int32
_PREVIEW_LENGTH = 255
# Bigger attachments need an upload session (not faked).
_ATTACHMENT_LIMIT = 3 * 1024 * 1024
# A message's properties (beyond id) the fake answers, as Graph names them.
_PROPERTIES = (
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
)
# ...and those it answers only when $select names them.
_SELECTED_ONLY = ("internetMessageHeaders",)
_CANONICAL = {name.lower(): name for name in ("id", *_PROPERTIES, *_SELECTED_ONLY)}
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "ge": operator.ge,
    "gt": operator.gt,
    "le": operator.le,
    "lt": operator.lt,
}
_FILTER_CLAUSE = re.compile(r"(\w+)\s+(eq|ne|ge|gt|le|lt)\s+(\S+)")
# A draft's properties a PATCH may change, besides isRead.
_DRAFT_FIELDS = {"subject", "body", "toRecipients", "ccRecipients", "bccRecipients"}
_MIME = policy.SMTP  # CRLF line ends, as mail goes out
# Change tracking: a delta's page size without Prefer: odata.maxpagesize, and what may be
# subscribed to (a user's messages, or a folder's).
_DELTA_PAGE, _MAX_DELTA_PAGE = 10, 1000
_FOLDER_IN_PATH = r"mailFolders(?:/([^/()']+)|\('([^/()']+)'\))"
_SUBSCRIBABLE = re.compile(
    rf"/?(?:me|users/([^/]+))/(?:{_FOLDER_IN_PATH}/)?messages", re.IGNORECASE
)


@dataclass(frozen=True)
class GraphRequest:
    """A request to Graph's mail endpoints, and whether it asked for immutable ids."""

    method: str
    path: str
    immutable_ids: bool


@dataclass
class _Draft:
    """A message as Graph's JSON describes it, checked."""

    subject: str | None = None
    body: tuple[str, str] | None = None  # (subtype: plain or html, content)
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    bcc: list[tuple[str, str]] = field(default_factory=list)
    attachments: list[_Attachment] = field(default_factory=list)


@dataclass
class _Attachment:
    name: str
    content_type: str
    data: bytes
    inline: bool


@dataclass(frozen=True)
class _DeltaQuery:
    """What a round of delta queries asked for: Graph keeps it in the round's tokens."""

    folder: str
    clauses: tuple[Clause, ...]
    change_type: str | None
    select: list[str] | None


@dataclass(frozen=True)
class _Seen:
    """A message as a delta round saw it."""

    held: StoredMessage
    change_key: str
    regular_id: str  # as it was then: it changes when the message moves


@dataclass
class _DeltaState:
    """What a state token stands for: the round's query, the folder as the round left it,
    and (for a page's token) the changes left for the round's next pages."""

    account: Account
    query: _DeltaQuery
    snapshot: dict[str, _Seen]
    pending: list[tuple[str, _Seen]]
    expired: bool = False


def _short_scope(scope: str) -> str:
    return scope.removeprefix(_GRAPH)


def _scope_name(scope: str) -> str:
    """`Mail.Send` of `https://graph.microsoft.com/Mail.Send` (Entra takes both forms)."""
    return scope.rsplit("/", 1)[-1].lower()


class FakeMicrosoft(FakeProvider):
    """Entra ID's v2.0 endpoints under {base_url}/{tenant}, Graph under {base_url}/v1.0."""

    _INVALID_CLIENT: ClassVar[dict[str, Any]] = {
        "error_description": "AADSTS7000215: Invalid client secret provided."
    }
    _INVALID_CODE: ClassVar[dict[str, Any]] = {
        "error_description": "AADSTS70008: The code has expired or was used."
    }
    _INVALID_REFRESH_TOKEN: ClassVar[dict[str, Any]] = {
        "error_description": "AADSTS700082: The refresh token has expired.",
        "error_codes": [700082],
    }
    # Entra's refusals a test can ask the token endpoint for, by AADSTS code: the OAuth
    # error, the suberror (if any), and the message after "AADSTS<code>: " in the
    # description.
    _REFUSALS: ClassVar[dict[int, tuple[str, str, str]]] = {
        50076: (
            "invalid_grant",
            "basic_action",
            "Due to a configuration change made by your administrator, or because you moved "
            "to a new location, you must use multi-factor authentication to access "
            "'00000003-0000-0000-c000-000000000000'.",
        ),
        50079: (
            "interaction_required",
            "basic_action",
            "Due to a configuration change made by your administrator, or because you moved "
            "to a new location, you must enroll in multi-factor authentication to access "
            "'00000003-0000-0000-c000-000000000000'.",
        ),
        65001: (
            "invalid_grant",
            "consent_required",
            "The user or administrator has not consented to use the application with ID "
            "'{client_id}' named 'mailbridge'. Send an interactive authorization request for "
            "this user and resource.",
        ),
        7000222: (
            "invalid_client",
            "",
            "The provided client secret keys for app '{client_id}' are expired. Visit the "
            "Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
            "consider using certificate credentials for added security: "
            "https://aka.ms/certCreds.",
        ),
    }
    # Graph's error objects.
    _UNAUTHENTICATED: ClassVar[dict[str, Any]] = {
        "code": "InvalidAuthenticationToken",
        "message": "Access token has expired or is not yet valid.",
    }
    _INSUFFICIENT_SCOPE: ClassVar[dict[str, Any]] = {
        "code": "ErrorAccessDenied",
        "message": "Access is denied. Check credentials and try again.",
    }
    # Graph throttles with 429, and when overloaded with 503 (and a Retry-After).
    _THROTTLED: ClassVar[dict[int, dict[str, Any]]] = {
        429: {
            "code": "TooManyRequests",
            "message": "Too many requests. Retry after the time the Retry-After header gives.",
        },
        503: {
            "code": "serviceNotAvailable",
            "message": "The service is temporarily unavailable. Retry after a delay.",
        },
    }

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        tenant_id: str = "9188040d-6c67-4c5b-b112-36a304b66dad",
        tenant_domain: str = "contoso.example",
    ) -> None:
        super().__init__(cert, key)
        self.tenant_id = tenant_id
        self.tenants = {tenant_id, tenant_domain, "organizations", "common"}
        # OpenID configurations a test sets by tenant (a domain): what the fake answers
        # instead of its own, for answers a real authority should never give.
        self.openid_configurations: dict[str, Reply] = {}
        # Every request to the mail endpoints: tests check each asked for immutable ids.
        self.mail_requests: list[GraphRequest] = []
        # Change tracking: the subscriptions by id, every request sent to their notification
        # URLs, and what each delta state token stands for.
        self.subscriptions: dict[str, GraphSubscription] = {}
        self.deliveries: list[Delivery] = []
        self._delta_states: dict[str, _DeltaState] = {}
        self._refusal: int | None = None

    def refuse_next_token(self, aadsts: int) -> None:
        """The next code or refresh token a client redeems, rightly, is refused with Entra's
        error AADSTS<aadsts> (50076, 50079, 65001 or 7000222), in its JSON shape: as when
        Conditional Access starts asking for multi-factor authentication, consent is revoked,
        or the app's client secret expires."""
        if aadsts not in self._REFUSALS:
            raise ValueError(f"no refusal AADSTS{aadsts}")
        with self._lock:
            self._refusal = aadsts

    def _refused(self, form: dict[str, str]) -> Reply | None:
        """The refusal asked for by refuse_next_token, if any."""
        with self._lock:
            aadsts, self._refusal = self._refusal, None
        return None if aadsts is None else self._entra_error(aadsts, form)

    def _entra_error(self, aadsts: int, form: dict[str, str]) -> Reply:
        """Entra's token endpoint refusing with AADSTS<aadsts>, in its JSON shape."""
        error, suberror, text = self._REFUSALS[aadsts]
        timestamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        description = (
            f"AADSTS{aadsts}: {text.format(client_id=form.get('client_id', ''))}\r\n"
            f"Trace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        )
        answer: dict[str, Any] = {
            "error": error,
            "error_description": description,
            "error_codes": [aadsts],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.base_url}/error?code={aadsts}",
        }
        if suberror:
            answer["suberror"] = suberror
        if suberror == "basic_action":  # the Conditional Access policy that asks for MFA
            policy_ids = {"essential": True, "values": [str(uuid.uuid4())]}
            answer["claims"] = json.dumps({"access_token": {"capolids": policy_ids}})
        # Entra answers a client that failed to authenticate with 401.
        return json_reply(401 if error == "invalid_client" else 400, answer)

    def regular_id(self, message_id: str) -> str:
        """The regular id Graph gives (without the Prefer header) the message with this
        immutable id, in the folder it is in now."""
        for account in self.accounts:
            for held in account.mailbox:
                if held.id == message_id:
                    return _regular_id(held)
        raise LookupError(message_id)

    def routes(self) -> list[tuple[str, PathTest, Route]]:
        def under(suffix: str) -> Callable[[str], bool]:
            return lambda path: path.endswith(suffix) and path.count("/") == suffix.count("/") + 1

        return [
            ("GET", under("/v2.0/.well-known/openid-configuration"), self._discovery),
            ("GET", under("/oauth2/v2.0/authorize"), self._authorize_route),
            ("POST", under("/oauth2/v2.0/token"), self._token_route),
            ("GET", lambda path: path == "/v1.0/me", self._api(_USER_READ, _user)),
            (
                "GET",
                lambda path: path == "/v1.0/me/mailFolders/inbox",
                self._api(_MAIL_READ, _inbox_folder),
            ),
            (
                "GET",
                re.compile(r"/v1\.0/me/mailFolders/([^/]+)/messages"),
                self._graph(_MAIL_READ, self._list_folder),
            ),
            ("GET", re.compile(_MESSAGES), self._graph(_MAIL_READ, self._list_all)),
            ("GET", re.compile(_MESSAGES + "/([^/]+)"), self._graph(_MAIL_READ, self._get)),
            ("GET", re.compile(_MESSAGES + r"/([^/]+)/\$value"), self._graph(_MAIL_READ, _mime)),
            ("PATCH", re.compile(_MESSAGES + "/([^/]+)"), self._graph(_MAIL_WRITE, self._update)),
            ("DELETE", re.compile(_MESSAGES + "/([^/]+)"), self._graph(_MAIL_WRITE, self._delete)),
            ("POST", re.compile(_MESSAGES), self._graph(_MAIL_WRITE, self._create)),
            (
                "POST",
                re.compile(_MESSAGES + "/([^/]+)/createReply"),
                self._graph(_MAIL_WRITE, self._create_reply),
            ),
            (
                "POST",
                re.compile(_MESSAGES + "/([^/]+)/attachments"),
                self._graph(_MAIL_WRITE, self._attach),
            ),
            ("POST", re.compile(_MESSAGES + "/([^/]+)/send"), self._graph(_MAIL_SEND, self._send)),
            ("POST", re.compile(r"/v1\.0/me/sendMail"), self._graph(_MAIL_SEND, self._send_mail)),
            (
                "GET",
                re.compile(rf"/v1\.0/me/{_FOLDER_IN_PATH}/messages/delta"),
                self._graph(_MAIL_READ, self._delta),
            ),
            ("POST", re.compile(r"/v1\.0/subscriptions"), self._graph(_MAIL_READ, self._subscribe)),
            (
                "PATCH",
                re.compile(r"/v1\.0/subscriptions/([^/]+)"),
                self._graph(_MAIL_READ, self._renew_subscription),
            ),
            (
                "DELETE",
                re.compile(r"/v1\.0/subscriptions/([^/]+)"),
                self._graph(_MAIL_READ, self._delete_subscription),
            ),
        ]

    def _graph(self, needs: set[str], handle: MailRoute) -> Route:
        """A mail endpoint, recording whether each request asked for immutable ids."""
        route = self._mail_api(needs, handle)

        def recorded(request: Request) -> Reply:
            self.mail_requests.append(
                GraphRequest(request.method, request.path, _prefers(request, _IMMUTABLE_IDS))
            )
            return route(request)

        return recorded

    def _new_message_id(self) -> str:
        return f"{_IMMUTABLE}{b64url(secrets.token_bytes(64))}AAA="

    def _new_thread_id(self, message_id: str) -> str:
        return f"AAQkAG{b64url(hashlib.sha256(message_id.encode()).digest())}="

    # -- reading
    def _list_folder(self, request: Request, token: AccessToken) -> Reply:
        folder = _folder(token.account, request.path_args[0])
        held = [held for held in token.account.mailbox if held.folder == folder]
        return self._list(request, token.account, held)

    def _list_all(self, request: Request, token: AccessToken) -> Reply:
        return self._list(request, token.account, token.account.mailbox)

    def _list(self, request: Request, account: Account, held: list[StoredMessage]) -> Reply:
        top = _number(request, "$top", _DEFAULT_TOP, 1, _MAX_TOP)
        skip = _number(request, "$skip", 0, 0, _MAX_SKIP)
        if "$skiptoken" in request.query:
            # The fake pages by $skip: any $skiptoken is one it never gave.
            raise ApiError(_error(400, "BadRequest", "Invalid $skiptoken."))
        clauses = _filter(request.query.get("$filter"))
        oldest_first = _order(request.query.get("$orderby"))
        # Graph refuses to sort on what the filter does not start with ("Update to Filtering
        # and Sorting in the Mail, Calendar and Contacts REST API").
        if clauses and oldest_first is not None and clauses[0][0] != "receivedDateTime":
            raise ApiError(
                _error(400, "InefficientFilter", "The restriction or sort order is too complex.")
            )
        found = sorted(
            (message for message in held if all(_matches(message, c) for c in clauses)),
            key=lambda message: message.newest_first,
            reverse=bool(oldest_first),
        )
        page = found[skip : skip + top]
        select = _select(request)
        answer: dict[str, Any] = {
            "@odata.context": f"{self.base_url}/v1.0/$metadata#users('{account.subject}')/messages",
            "value": [self._message(request, account, message, select) for message in page],
        }
        if skip + top < len(found):
            more = [(k, v) for k, v in request.query_items if k != "$skip"]
            more.append(("$skip", str(skip + top)))
            answer["@odata.nextLink"] = f"{self.base_url}{request.path}?{urlencode(more)}"
        return self._answer(request, 200, answer)

    def _get(self, request: Request, token: AccessToken) -> Reply:
        held = _find(token.account, request.path_args[0])
        return self._answer(
            request, 200, self._message(request, token.account, held, _select(request))
        )

    # -- changing
    def _update(self, request: Request, token: AccessToken) -> Reply:
        held = _find(token.account, request.path_args[0])
        changes = _json_body(request)
        for name, value in changes.items():
            if name == "isRead":
                if not isinstance(value, bool):
                    raise ApiError(_bad_request("isRead must be true or false."))
            elif name not in _DRAFT_FIELDS:
                raise ApiError(_bad_request(f"Changing {name} is not faked."))
            elif held.folder != "drafts":
                raise ApiError(_bad_request(f"Only a draft's {name} may change."))
        edits = _draft({key: value for key, value in changes.items() if key != "isRead"})
        with self._lock:
            if "isRead" in changes:
                held.read = changes["isRead"]
            if set(changes) & _DRAFT_FIELDS:
                held.raw = _edited(held.parsed(), edits, changes)
        return self._answer(request, 200, self._message(request, token.account, held, None))

    def _delete(self, request: Request, token: AccessToken) -> Reply:
        """Graph's DELETE: the message leaves every folder (for the mailbox's recoverable
        items, which the fake does not keep)."""
        held = _find(token.account, request.path_args[0])
        with self._lock:
            token.account.mailbox.remove(held)
        return Reply(204)

    def _create(self, request: Request, token: AccessToken) -> Reply:
        """A draft, from base64 MIME (Content-Type: text/plain) or Graph's JSON."""
        account = token.account
        raw = _mime_body(request)
        if raw is None:
            raw = _compose(account, _draft(_json_body(request)))
        raw = _with_message_id(account, raw)
        thread_id = self.thread_of(account, parse_message(raw))
        held = self.hold(
            account, raw, folder="drafts", labels={"DRAFT"}, read=True, thread_id=thread_id
        )
        return self._answer(request, 201, self._message(request, account, held, None))

    def _create_reply(self, request: Request, token: AccessToken) -> Reply:
        account = token.account
        original = _find(account, request.path_args[0])
        mime = _mime_body(request)
        if mime is not None:
            # In MIME, the client writes the reply whole (headers, threading, attachments);
            # Graph keeps it in the original's conversation.
            raw = _with_message_id(account, mime)
            held = self.hold(
                account,
                raw,
                folder="drafts",
                labels={"DRAFT"},
                read=True,
                thread_id=original.thread_id,
            )
            return self._answer(request, 201, self._message(request, account, held, None))
        body = _json_body(request)
        fields = body.get("message", {})
        comment = body.get("comment")
        if not isinstance(fields, dict) or not isinstance(comment, str | None):
            raise ApiError(_error(400, "RequestBodyRead", "The request body is not valid."))
        if comment is not None and "body" in fields:
            raise ApiError(_bad_request("Specify either a comment or the message body, not both."))
        draft = _draft(fields)
        answered = original.parsed()
        draft.to = draft.to or addresses(answered, "Reply-To") or addresses(answered, "From")
        if draft.subject is None:
            subject = str(answered.get("Subject", ""))
            draft.subject = subject if re.match(r"(?i)re\s*:", subject) else f"RE: {subject}"
        if draft.body is None:
            # Outlook's reply quotes the original under the comment.
            quoted = html.escape(body_text(answered)).replace("\n", "<br>")
            said = html.escape(comment or "")
            draft.body = ("html", f"<html><body><p>{said}</p><hr><div>{quoted}</div></body></html>")
        raw = _compose(account, draft, answering=answered)
        held = self.hold(
            account, raw, folder="drafts", labels={"DRAFT"}, read=True, thread_id=original.thread_id
        )
        return self._answer(request, 201, self._message(request, account, held, None))

    def _attach(self, request: Request, token: AccessToken) -> Reply:
        held = _find(token.account, request.path_args[0])
        if held.folder != "drafts":
            raise ApiError(_bad_request("The fake adds attachments to drafts only."))
        attachment = _attachment(_json_body(request))
        message = held.parsed()
        _add(message, attachment)
        with self._lock:
            held.raw = message.as_bytes(policy=_MIME)
        digest = hashlib.sha256(held.raw).digest()
        return self._answer(
            request,
            201,
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "id": f"{_REGULAR}AG{b64url(digest)}=",
                "lastModifiedDateTime": _when(datetime.datetime.now(datetime.UTC)),
                "name": attachment.name,
                "contentType": attachment.content_type,
                "size": len(attachment.data),
                "isInline": attachment.inline,
                "contentId": None,
                "contentLocation": None,
                "contentBytes": base64.b64encode(attachment.data).decode(),
            },
        )

    # -- sending
    def _send(self, request: Request, token: AccessToken) -> Reply:
        account = token.account
        held = _find(account, request.path_args[0])
        if held.folder != "drafts":
            raise ApiError(_bad_request("Only a draft can be sent."))
        raw = _sendable(account, held.raw)
        with self._lock:
            # Sent, the draft moves to Sent Items: its immutable id stays, its regular changes.
            held.raw, held.folder, held.labels = raw, "sentitems", {"SENT"}
            held.received_at = datetime.datetime.now(datetime.UTC)
        return Reply(202)

    def _send_mail(self, request: Request, token: AccessToken) -> Reply:
        account = token.account
        raw = _mime_body(request)
        save = True
        if raw is None:
            body = _json_body(request)
            fields, save = body.get("message"), body.get("saveToSentItems", True)
            if not isinstance(fields, dict) or not isinstance(save, bool):
                raise ApiError(_error(400, "RequestBodyRead", "The request body is not valid."))
            raw = _compose(account, _draft(fields))
        raw = _sendable(account, _with_message_id(account, raw))
        if save:
            thread_id = self.thread_of(account, parse_message(raw))
            self.hold(
                account, raw, folder="sentitems", labels={"SENT"}, read=True, thread_id=thread_id
            )
        return Reply(202)

    # -- change tracking: what tests do
    def deliver(
        self,
        email: str,
        raw: bytes,
        *,
        unread: bool = True,
        received_at: datetime.datetime | None = None,
    ) -> str:
        """As FakeProvider.deliver; then, as Graph, a change notification ("created") to each
        subscription on the inbox's messages (or the mailbox's), posted before this returns."""
        message_id = super().deliver(email, raw, unread=unread, received_at=received_at)
        account = self.account(email)
        held = next(held for held in account.mailbox if held.id == message_id)
        for subscription in self._subscriptions_on(account, held.folder, "created"):
            notified_id = held.id if subscription.immutable_ids else _regular_id(held)
            resource = f"Users/{account.subject}/Messages/{notified_id}"
            notification = {
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": _when(subscription.expires_at),
                "changeType": "created",
                "resource": resource,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": resource,
                    "@odata.etag": f'W/"{_change_key(held)}"',
                    "id": notified_id,
                },
                "clientState": subscription.client_state,
                "tenantId": self.tenant_id,
            }
            self.deliveries.append(
                notify(
                    subscription.notification_url,
                    [notification],
                    kind="created",
                    subscription_id=subscription.id,
                )
            )
        return message_id

    def send_lifecycle_notification(self, subscription_id: str, event: str) -> Delivery:
        """Graph's lifecycle notification `event` (reauthorizationRequired,
        subscriptionRemoved, missed) to the subscription's lifecycle URL. Graph removes the
        subscription before it says subscriptionRemoved."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"no lifecycle event {event}")
        subscription = self.subscriptions[subscription_id]
        if subscription.lifecycle_url is None:
            raise ValueError("the subscription has no lifecycleNotificationUrl: Graph sends none")
        if event == "subscriptionRemoved":
            with self._lock:
                del self.subscriptions[subscription_id]
        notification = {
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": _when(subscription.expires_at),
            "tenantId": self.tenant_id,
            "clientState": subscription.client_state,
            "lifecycleEvent": event,
        }
        delivery = notify(
            subscription.lifecycle_url, [notification], kind=event, subscription_id=subscription.id
        )
        self.deliveries.append(delivery)
        return delivery

    def expire_delta_tokens(self, email: str) -> None:
        """Graph forgets the state of the account's delta queries: their links answer 410."""
        account = self.account(email)
        with self._lock:
            for state in self._delta_states.values():
                if state.account is account:
                    state.expired = True

    def subscriptions_of(self, email: str) -> list[GraphSubscription]:
        """The account's live subscriptions, oldest first."""
        account = self.account(email)
        return [s for s in self.subscriptions.values() if s.account is account and not s.expired]

    def _subscriptions_on(
        self, account: Account, folder: str, change_type: str
    ) -> list[GraphSubscription]:
        return [
            subscription
            for subscription in self.subscriptions_of(account.email)
            if subscription.account is account
            and subscription.folder in (None, folder)
            and change_type in subscription.change_types
        ]

    # -- change tracking: subscriptions
    def _subscribe(self, request: Request, token: AccessToken) -> Reply:
        """POST /subscriptions: checked as Graph checks it, then created only if each of its
        notification URLs answers the validation request."""
        account = token.account
        body = _json_body(request)
        change_types = frozenset(str(body.get("changeType") or "").split(","))
        if not change_types <= CHANGE_TYPES:
            raise ApiError(_invalid_request("changeType: created, updated and/or deleted."))
        resource = body.get("resource")
        found = _SUBSCRIBABLE.fullmatch(resource) if isinstance(resource, str) else None
        if not isinstance(resource, str) or found is None:
            raise ApiError(_invalid_request("The resource is not one the fake subscribes to."))
        user, *folder_refs = found.groups()
        if user is not None and user.lower() not in {account.subject, account.email.lower()}:
            raise ApiError(
                _error(403, "ExtensionError", "Delegated permissions watch the user's own mail.")
            )
        folder_ref = next((ref for ref in folder_refs if ref), None)
        folder = _folder(account, folder_ref) if folder_ref else None
        urls = [body.get("notificationUrl"), body.get("lifecycleNotificationUrl")]
        notification_url, lifecycle_url = urls
        if not isinstance(notification_url, str) or not all(
            isinstance(url, str) and endpoint_allowed(url) for url in urls if url is not None
        ):
            raise ApiError(_invalid_request("The notification URLs must be https URLs."))
        client_state = body.get("clientState")
        if client_state is not None and (
            not isinstance(client_state, str) or len(client_state) > 128
        ):
            raise ApiError(_invalid_request("clientState is a string of at most 128 characters."))
        expires_at = _expiry(body.get("expirationDateTime"))
        for url in dict.fromkeys(url for url in urls if url is not None):
            delivery, answered = validate(url)
            self.deliveries.append(delivery)
            if not answered:
                raise ApiError(
                    _error(
                        400,
                        "ValidationError",
                        "Subscription validation request failed. Notification endpoint must "
                        "respond with 200 OK to validation request.",
                    )
                )
        subscription = GraphSubscription(
            id=str(uuid.uuid4()),
            account=account,
            resource=resource,
            folder=folder,
            change_types=change_types,
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            expires_at=expires_at,
            client_state=client_state,
            immutable_ids=_prefers(request, _IMMUTABLE_IDS),
        )
        with self._lock:
            self.subscriptions[subscription.id] = subscription
            if client_state:
                self.secrets.add(client_state)  # the service must never let it out
        return json_reply(
            201,
            {
                "@odata.context": f"{self.base_url}/v1.0/$metadata#subscriptions/$entity",
                **subscription.resource_json(),
            },
        )

    def _renew_subscription(self, request: Request, token: AccessToken) -> Reply:
        subscription = self._own_subscription(request, token)
        body = _json_body(request)
        if set(body) - {"expirationDateTime", "notificationUrl"}:
            raise ApiError(_invalid_request("Only expirationDateTime and notificationUrl change."))
        subscription.expires_at = _expiry(body.get("expirationDateTime"))
        return json_reply(200, subscription.resource_json())

    def _delete_subscription(self, request: Request, token: AccessToken) -> Reply:
        subscription = self._own_subscription(request, token)
        with self._lock:
            self.subscriptions.pop(subscription.id, None)
        return Reply(204)

    def _own_subscription(self, request: Request, token: AccessToken) -> GraphSubscription:
        """The live subscription the path names, if it is the token's user's."""
        subscription = self.subscriptions.get(request.path_args[0])
        if (
            subscription is None
            or subscription.expired
            or subscription.account is not token.account
        ):
            raise ApiError(_error(404, "ResourceNotFound", "The subscription was not found."))
        return subscription

    # -- change tracking: the message delta
    def _delta(self, request: Request, token: AccessToken) -> Reply:
        """GET .../mailFolders/{id}/messages/delta: a round's first request lists the
        folder's messages (those the filter keeps); a deltaLink's, what changed since its
        round (only `changeType`'s kind, if the round asked for one); a nextLink's, the
        round's next page."""
        account = token.account
        folder = _folder(account, next(ref for ref in request.path_args if ref))
        state_token = request.query.get("$deltatoken") or request.query.get("$skiptoken")
        if state_token is not None:
            state = self._delta_states.get(state_token)
            if (
                state is None
                or state.expired
                or state.account is not account
                or state.query.folder != folder
            ):
                raise ApiError(
                    _error(410, "SyncStateNotFound", "The sync state generation is not found.")
                )
            query = state.query
            if "$skiptoken" in request.query:
                snapshot, changes = state.snapshot, state.pending
            else:
                snapshot = self._snapshot(account, query)
                changes = _changes(state.snapshot, snapshot, query.change_type)
        else:
            query = _delta_query(request, folder)
            snapshot = self._snapshot(account, query)
            changes = [("created", seen) for seen in snapshot.values()]
        size = _page_size(request)
        page, rest = changes[:size], changes[size:]
        next_token = secrets.token_urlsafe(24)
        with self._lock:
            self._delta_states[next_token] = _DeltaState(account, query, snapshot, rest)
        name, parameter = ("nextLink", "$skiptoken") if rest else ("deltaLink", "$deltatoken")
        link = f"{self.base_url}/v1.0/me/mailFolders('{folder}')/messages/delta"
        return self._answer(
            request,
            200,
            {
                "@odata.context": f"{self.base_url}/v1.0/$metadata#Collection(message)",
                f"@odata.{name}": f"{link}?{parameter}={next_token}",
                "value": [
                    self._delta_entry(request, account, kind, seen, query) for kind, seen in page
                ],
            },
        )

    def _snapshot(self, account: Account, query: _DeltaQuery) -> dict[str, _Seen]:
        """The folder's messages the query keeps, as they are now, in arrival order."""
        with self._lock:
            return {
                held.id: _Seen(held, _change_key(held), _regular_id(held))
                for held in account.mailbox
                if held.folder == query.folder and all(_matches(held, c) for c in query.clauses)
            }

    def _delta_entry(
        self, request: Request, account: Account, kind: str, seen: _Seen, query: _DeltaQuery
    ) -> dict[str, Any]:
        if kind == "deleted":
            removed_id = seen.held.id if _prefers(request, _IMMUTABLE_IDS) else seen.regular_id
            return {
                "@odata.type": "#microsoft.graph.message",
                "id": removed_id,
                "@removed": {"reason": "deleted"},
            }
        return {
            "@odata.type": "#microsoft.graph.message",
            **self._message(request, account, seen.held, query.select),
        }

    # -- answers
    def _message(
        self, request: Request, account: Account, held: StoredMessage, select: list[str] | None
    ) -> dict[str, Any]:
        """The message as Graph's JSON, with the properties `select` names (else all)."""
        message = held.parsed()
        sender = [_recipient(address) for address in addresses(message, "From")]
        received = _when(held.received_at)
        change_key = _change_key(held)
        everything: dict[str, Any] = {
            "id": held.id if _prefers(request, _IMMUTABLE_IDS) else _regular_id(held),
            "createdDateTime": received,
            "lastModifiedDateTime": received,
            "changeKey": change_key,
            "categories": [],
            "receivedDateTime": received,
            "sentDateTime": _when(_sent_at(message) or held.received_at),
            "hasAttachments": _has_attachments(message),
            "internetMessageId": message.get("Message-ID", "").strip(),
            "subject": str(message.get("Subject", "")),
            "bodyPreview": preview(message, _PREVIEW_LENGTH),
            "importance": "normal",
            "parentFolderId": _folder_id(account, held.folder),
            "conversationId": held.thread_id,
            "isReadReceiptRequested": False,
            "isRead": held.read,
            "isDraft": held.folder == "drafts",
            "body": _body(message, as_text=_prefers(request, _TEXT_BODY)),
            "sender": sender[0] if sender else None,
            "from": sender[0] if sender else None,
            "toRecipients": [_recipient(address) for address in addresses(message, "To")],
            "ccRecipients": [_recipient(address) for address in addresses(message, "Cc")],
            "bccRecipients": [_recipient(address) for address in addresses(message, "Bcc")],
            "replyTo": [_recipient(address) for address in addresses(message, "Reply-To")],
            "flag": {"flagStatus": "notFlagged"},
            "internetMessageHeaders": [
                {"name": name, "value": str(value)} for name, value in message.items()
            ],
        }
        names = [name for name in ("id", *_PROPERTIES)] if select is None else ["id", *select]
        return {"@odata.etag": f'W/"{change_key}"'} | {name: everything[name] for name in names}

    def _answer(self, request: Request, status: int, value: dict[str, Any]) -> Reply:
        reply = json_reply(status, value)
        if _prefers(request, _TEXT_BODY):
            reply.headers["Preference-Applied"] = 'outlook.body-content-type="text"'
        return reply

    def _tenant(self, request: Request) -> str | None:
        tenant = request.path.split("/")[1]
        return tenant if tenant in self.tenants else None

    def _unknown_tenant(self) -> Reply:
        return json_reply(
            400, {"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant not found."}
        )

    def _discovery(self, request: Request) -> Reply:
        if (planted := self.openid_configurations.get(request.path.split("/")[1])) is not None:
            return planted
        tenant = self._tenant(request)
        if tenant is None:
            return self._unknown_tenant()
        base = f"{self.base_url}/{tenant}"
        return json_reply(
            200,
            {
                "issuer": f"{self.base_url}/{self.tenant_id}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
            },
        )

    def _authorize_route(self, request: Request) -> Reply:
        if self._tenant(request) is None:
            return html_page(400, "AADSTS90002: Tenant not found.")
        scopes = [_short_scope(s) for s in request.query.get("scope", "").split()]
        return self._authorize(request, scopes, offline="offline_access" in scopes)

    def _token_route(self, request: Request) -> Reply:
        tenant = self._tenant(request)
        if tenant is None:
            return self._unknown_tenant()
        return self._token(request, tenant=tenant)

    def _code_tokens(self, app: App, code: Code, form: dict[str, str]) -> Reply:
        refused = self._refused(form)
        if refused is not None:
            return refused
        return self._tokens(app, code.account, code.scopes, code.offline, code.nonce, form)

    def _refreshed_tokens(self, app: App, grant: Grant, form: dict[str, str]) -> Reply:
        refused = self._refused(form)
        if refused is not None:
            return refused
        # Entra refuses a refresh that asks for a scope the grant does not hold (never
        # consented to, or consent withdrawn): AADSTS65001, not a narrower token.
        held = {_scope_name(scope) for scope in grant.scopes}
        asked = {_scope_name(scope) for scope in form.get("scope", "").split()}
        if asked - held - {"openid", "profile", "offline_access"}:
            return self._entra_error(65001, form)
        # Each use hands out a successor; the used one stays valid until it expires or is
        # revoked ("Refresh tokens in the Microsoft identity platform").
        self._count_refresh(form)
        return self._tokens(app, grant.account, grant.scopes, True, None, form)

    def _tokens(
        self,
        app: App,
        account: Account,
        scopes: list[str],
        offline: bool,
        nonce: str | None,
        form: dict[str, str],
    ) -> Reply:
        access_token, lifetime = self._issue(account, scopes)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(
                s for s in scopes if s not in {"openid", "profile", "offline_access"}
            ),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }
        if offline:
            answer["refresh_token"] = self._issue_refresh_token(app, account, scopes)
        if "openid" in scopes:
            claims = self._id_claims(f"{self.base_url}/{self.tenant_id}/v2.0", app, account)
            claims |= {
                # `sub` is pairwise (one per app); `oid` is the user's object in the tenant.
                "sub": b64url(
                    hashlib.sha256(f"{app.client_id}/{account.subject}".encode()).digest()
                ),
                "oid": account.subject,
                "tid": self.tenant_id,
                "preferred_username": account.email,
                "name": account.email.split("@")[0],
                "nbf": claims["iat"],
                "ver": "2.0",
            }
            if nonce:
                claims["nonce"] = nonce
            answer["id_token"] = unsigned_jwt(claims)
        if form.get("client_info") == "1":
            answer["client_info"] = b64url(
                json.dumps({"uid": account.subject, "utid": self.tenant_id}).encode()
            )
        return json_reply(200, answer)


def _user(account: Account) -> dict[str, Any]:
    return {
        "id": account.subject,
        "displayName": account.email.split("@")[0],
        "mail": account.email,
        "userPrincipalName": account.email,
    }


def _inbox_folder(account: Account) -> dict[str, Any]:
    return {
        "id": "inbox-id",
        "displayName": "Inbox",
        "totalItemCount": account.inbox_total,
        "unreadItemCount": account.inbox_unread,
        "childFolderCount": 0,
    }


# What a request may prefer, in its Prefer header.
_IMMUTABLE_IDS = 'idtype="immutableid"'
_TEXT_BODY = 'outlook.body-content-type="text"'


def _prefers(request: Request, preference: str) -> bool:
    asked = request.headers.get("prefer", "").replace(" ", "").lower()
    return preference in asked.split(",")


def _error(status: int, code: str, message: str) -> Reply:
    """An error in Graph's shape."""
    inner = {"date": _when(datetime.datetime.now(datetime.UTC)), "request-id": str(uuid.uuid4())}
    return json_reply(status, {"error": {"code": code, "message": message, "innerError": inner}})


def _bad_request(message: str) -> Reply:
    return _error(400, "ErrorInvalidRequest", message)


def _when(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _regular_id(held: StoredMessage) -> str:
    # A regular id names the message in its folder: moving it makes another.
    digest = hashlib.sha256(f"{held.id}/{held.folder}".encode()).digest()
    return f"{_REGULAR}AG{b64url(digest * 2)}AAA="


def _folder_id(account: Account, folder: str) -> str:
    digest = hashlib.sha256(f"{account.subject}/{folder}".encode()).digest()
    return f"{_REGULAR}AG{b64url(digest)}AAA="


def _folder(account: Account, reference: str) -> str:
    """The well-known name of a folder given by that name (in any case) or by its id."""
    if reference.lower() in _FOLDERS:
        return reference.lower()
    for name in _FOLDERS:
        if _folder_id(account, name) == reference:
            return name
    raise ApiError(_not_found())


def _not_found() -> Reply:
    return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def _find(account: Account, message_id: str) -> StoredMessage:
    """The account's message with this id, in either form."""
    if message_id.startswith(_IMMUTABLE):
        found = [held for held in account.mailbox if held.id == message_id]
    elif message_id.startswith(_REGULAR):
        found = [held for held in account.mailbox if _regular_id(held) == message_id]
    else:
        raise ApiError(_error(400, "ErrorInvalidIdMalformed", "Id is malformed."))
    if not found:
        raise ApiError(_not_found())
    return found[0]


def _number(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(_error(400, "BadRequest", f"Invalid value for {name}: {text}"))
    return value


Clause = tuple[str, str, Any]


def _filter(text: str | None) -> list[Clause]:
    """The clauses of a $filter the fake supports (isRead, hasAttachments, isDraft and
    receivedDateTime, joined by "and")."""
    if not text:
        return []
    clauses: list[Clause] = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        found = _FILTER_CLAUSE.fullmatch(part.strip())
        if found is None:
            raise ApiError(_error(400, "BadRequest", f"Invalid filter clause: {part}"))
        name, comparison, literal = found.groups()
        if name in {"isRead", "hasAttachments", "isDraft"} and comparison in {"eq", "ne"}:
            if literal not in {"true", "false"}:
                raise ApiError(_error(400, "BadRequest", f"Invalid filter clause: {part}"))
            clauses.append((name, comparison, literal == "true"))
        elif name == "receivedDateTime":
            try:
                moment = datetime.datetime.fromisoformat(literal)
            except ValueError:
                raise ApiError(_error(400, "BadRequest", f"Invalid date: {literal}")) from None
            if moment.tzinfo is None:
                raise ApiError(_error(400, "BadRequest", f"Invalid date: {literal}"))
            clauses.append((name, comparison, moment))
        else:
            raise ApiError(_bad_request(f"The fake does not filter on: {part}"))
    return clauses


def _matches(held: StoredMessage, clause: Clause) -> bool:
    name, comparison, expected = clause
    actual: Any
    if name == "isRead":
        actual = held.read
    elif name == "isDraft":
        actual = held.folder == "drafts"
    elif name == "hasAttachments":
        actual = _has_attachments(held.parsed())
    else:
        actual = held.received_at.replace(microsecond=0)
    return _COMPARISONS[comparison](actual, expected)


def _has_attachments(message: EmailMessage) -> bool:
    return any(True for _ in message.iter_attachments())


def _order(text: str | None) -> bool | None:
    """Whether $orderby asks for the oldest first; None without one."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*receivedDateTime(?:\s+(asc|desc))?\s*", text, re.IGNORECASE)
    if found is None:
        raise ApiError(_bad_request(f"The fake sorts by receivedDateTime only, not {text}."))
    return (found.group(1) or "asc").lower() == "asc"


def _select(request: Request) -> list[str] | None:
    text = request.query.get("$select")
    if text is None:
        return None
    names = []
    for asked in (name.strip() for name in text.split(",") if name.strip()):
        if asked.lower() not in _CANONICAL:
            raise ApiError(
                _error(
                    400,
                    "RequestBroker--ParseUri",
                    f"Could not find a property named '{asked}' on type 'microsoft.graph.message'.",
                )
            )
        names.append(_CANONICAL[asked.lower()])
    return [name for name in dict.fromkeys(names) if name != "id"]


def _body(message: EmailMessage, *, as_text: bool) -> dict[str, str]:
    """The body as Graph gives it: HTML unless the request prefers text."""
    if as_text:
        return {"contentType": "text", "content": body_text(message)}
    part = message.get_body(preferencelist=("html",))
    if part is not None:
        return {"contentType": "html", "content": str(part.get_content())}
    text = html.escape(body_text(message)).replace("\n", "<br>")
    return {"contentType": "html", "content": f"<html><body><div>{text}</div></body></html>"}


def _recipient(address: tuple[str, str]) -> dict[str, Any]:
    name, email = address
    return {"emailAddress": {"name": name or email, "address": email}}


def _sent_at(message: EmailMessage) -> datetime.datetime | None:
    try:
        return parsedate_to_datetime(str(message.get("Date", "")))
    except (TypeError, ValueError):
        return None


def _mime(request: Request, token: AccessToken) -> Reply:
    """GET .../$value: the message's MIME, which Graph sends as text/plain."""
    held = _find(token.account, request.path_args[0])
    return Reply(200, held.raw, {"Content-Type": "text/plain"})


def _json_body(request: Request) -> dict[str, Any]:
    body = request.json_object()
    if body is None:
        raise ApiError(_error(400, "RequestBodyRead", "The request body is not a JSON object."))
    return body


def _mime_body(request: Request) -> bytes | None:
    """The MIME message of a text/plain request body (base64, as Graph takes it), or None
    for a request with another content type."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "text/plain":
        return None
    try:
        raw = base64.b64decode(b"".join(request.body.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise ApiError(
            _error(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            )
        )
    return raw


def _recipients(value: Any) -> list[tuple[str, str]]:
    """Graph's recipients ([{"emailAddress": {"address", "name"?}}]) as (name, address)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(_error(400, "RequestBodyRead", "Recipients must be a list."))
    found = []
    for recipient in value:
        address = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        if not isinstance(address, dict) or not isinstance(address.get("address"), str):
            raise ApiError(_error(400, "RequestBodyRead", "A recipient has no emailAddress."))
        found.append((str(address.get("name") or ""), address["address"]))
    return found


def _draft(fields: dict[str, Any]) -> _Draft:
    """The message Graph's JSON describes; what the fake does not take is refused."""
    known = {"subject", "body", "toRecipients", "ccRecipients", "bccRecipients", "attachments"}
    for name in fields:
        if name not in known:
            raise ApiError(_bad_request(f"The message property {name} is not faked."))
    draft = _Draft(
        to=_recipients(fields.get("toRecipients")),
        cc=_recipients(fields.get("ccRecipients")),
        bcc=_recipients(fields.get("bccRecipients")),
    )
    subject = fields.get("subject")
    if subject is not None:
        if not isinstance(subject, str):
            raise ApiError(_error(400, "RequestBodyRead", "subject must be a string."))
        draft.subject = subject
    body = fields.get("body")
    if body is not None:
        kind = body.get("contentType", "text") if isinstance(body, dict) else None
        content = body.get("content", "") if isinstance(body, dict) else None
        if not isinstance(kind, str) or kind.lower() not in {"text", "html"}:
            raise ApiError(_error(400, "RequestBodyRead", "body.contentType: text or html."))
        if not isinstance(content, str):
            raise ApiError(_error(400, "RequestBodyRead", "body.content must be a string."))
        draft.body = ("html" if kind.lower() == "html" else "plain", content)
    attachments = fields.get("attachments", [])
    if not isinstance(attachments, list):
        raise ApiError(_error(400, "RequestBodyRead", "attachments must be a list."))
    draft.attachments = [_attachment(attachment) for attachment in attachments]
    return draft


def _attachment(value: Any) -> _Attachment:
    if not isinstance(value, dict):
        raise ApiError(_error(400, "RequestBodyRead", "An attachment must be an object."))
    if value.get("@odata.type") != "#microsoft.graph.fileAttachment":
        raise ApiError(_bad_request("The fake takes file attachments only."))
    name, encoded = value.get("name"), value.get("contentBytes")
    content_type = value.get("contentType") or "application/octet-stream"
    if not isinstance(name, str) or not name or not isinstance(encoded, str):
        raise ApiError(_bad_request("A file attachment needs a name and contentBytes."))
    if not isinstance(content_type, str) or "/" not in content_type:
        raise ApiError(_bad_request("contentType must be a MIME type."))
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(_error(400, "RequestBodyRead", "contentBytes is not base64.")) from None
    if len(data) >= _ATTACHMENT_LIMIT:
        raise ApiError(
            _error(
                413,
                "RequestEntityTooLarge",
                "Attachments of 3 MB or more need an upload session (not faked).",
            )
        )
    return _Attachment(name, content_type, data, value.get("isInline") is True)


def _add(message: EmailMessage, attachment: _Attachment) -> None:
    maintype, _, subtype = attachment.content_type.partition("/")
    message.add_attachment(
        attachment.data,
        maintype=maintype,
        subtype=subtype,
        filename=attachment.name,
        disposition="inline" if attachment.inline else "attachment",
    )


def _addresses_header(found: list[tuple[str, str]]) -> str:
    return ", ".join(formataddr(address) for address in found)


def _compose(account: Account, draft: _Draft, *, answering: EmailMessage | None = None) -> bytes:
    """The MIME message Graph makes of a JSON one: from the account, with a Message-ID, and
    (for a reply) In-Reply-To and References naming the message it answers."""
    message = EmailMessage(policy=_MIME)
    message["From"] = account.email
    for header, found in (("To", draft.to), ("Cc", draft.cc), ("Bcc", draft.bcc)):
        if found:
            message[header] = _addresses_header(found)
    message["Subject"] = draft.subject or ""
    message["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    message["Message-ID"] = make_msgid(domain=account.email.rpartition("@")[2])
    if answering is not None:
        answered = answering.get("Message-ID", "").strip()
        if answered:
            earlier = str(answering.get("References", "")).split()
            message["In-Reply-To"] = answered
            message["References"] = " ".join([*earlier, answered])
    subtype, content = draft.body or ("plain", "")
    message.set_content(content, subtype=subtype)
    for attachment in draft.attachments:
        _add(message, attachment)
    return message.as_bytes()


def _edited(message: EmailMessage, draft: _Draft, changes: dict[str, Any]) -> bytes:
    """A draft's MIME with the properties a PATCH changes."""
    for name, header, found in (
        ("toRecipients", "To", draft.to),
        ("ccRecipients", "Cc", draft.cc),
        ("bccRecipients", "Bcc", draft.bcc),
    ):
        if name in changes:
            del message[header]
            if found:
                message[header] = _addresses_header(found)
    if draft.subject is not None:
        del message["Subject"]
        message["Subject"] = draft.subject
    if draft.body is not None:
        part = message.get_body(preferencelist=("plain", "html")) or message
        subtype, content = draft.body
        part.set_content(content, subtype=subtype)
    return message.as_bytes(policy=_MIME)


def _with_message_id(account: Account, raw: bytes) -> bytes:
    """Exchange gives every message a Message-ID when it is made."""
    if "Message-ID" in parse_message(raw):
        return raw
    domain = account.email.rpartition("@")[2]
    return f"Message-ID: {make_msgid(domain=domain)}\r\n".encode() + raw


def _sendable(account: Account, raw: bytes) -> bytes:
    """The message as it goes out, after Exchange's checks: someone to send it to, every
    address valid, and sent as the account. Exchange adds a missing From and Date."""
    message = parse_message(raw)
    recipients = addresses(message, "To", "Cc", "Bcc")
    invalid = [a for _, a in recipients if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a)]
    if not recipients or invalid:
        raise ApiError(_error(400, "ErrorInvalidRecipients", "At least one recipient isn't valid."))
    senders = [address.lower() for _, address in addresses(message, "From")]
    if senders and senders != [account.email.lower()]:
        raise ApiError(
            _error(
                403,
                "ErrorSendAsDenied",
                "The user account which was used to submit this request does not have the"
                " right to send mail on behalf of the specified sending account.",
            )
        )
    missing = []
    if not senders:
        missing.append(f"From: {account.email}")
    if "Date" not in message:
        missing.append(f"Date: {format_datetime(datetime.datetime.now(datetime.UTC))}")
    return "".join(f"{line}\r\n" for line in missing).encode() + raw


def _change_key(held: StoredMessage) -> str:
    """Changes whenever the message does (its content, its read state)."""
    return b64url(hashlib.sha256(held.raw + bytes([held.read])).digest()[:12])


def _invalid_request(message: str) -> Reply:
    return _error(400, "InvalidRequest", message)


def _expiry(value: Any) -> datetime.datetime:
    """A subscription's expirationDateTime, if Graph takes it: in the future, and at most
    the longest a subscription on messages may live."""
    try:
        moment = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        raise ApiError(_invalid_request("expirationDateTime is not a date and time.")) from None
    if moment.tzinfo is None:
        raise ApiError(_invalid_request("expirationDateTime needs its time zone."))
    now = datetime.datetime.now(datetime.UTC)
    if moment <= now:
        raise ApiError(_invalid_request("expirationDateTime must be in the future."))
    if moment > now + datetime.timedelta(minutes=MAX_SUBSCRIPTION_MINUTES):
        raise ApiError(
            _invalid_request(
                f"Subscription expiration can only be {MAX_SUBSCRIPTION_MINUTES} minutes in "
                "the future."
            )
        )
    return moment.astimezone(datetime.UTC)


def _delta_query(request: Request, folder: str) -> _DeltaQuery:
    """A round's first request, checked as Graph checks a message delta's: a filter on
    receivedDateTime ge or gt only, an order by receivedDateTime desc only, no search."""
    clauses = _filter(request.query.get("$filter"))
    if len(clauses) > 1 or any(
        name != "receivedDateTime" or comparison not in ("ge", "gt")
        for name, comparison, _ in clauses
    ):
        raise ApiError(
            _bad_request("A message delta filters only by receivedDateTime ge or gt a moment.")
        )
    order = request.query.get("$orderby")
    if order is not None and " ".join(order.split()).lower() != "receiveddatetime desc":
        raise ApiError(_bad_request("A message delta orders only by receivedDateTime desc."))
    if "$search" in request.query:
        raise ApiError(_bad_request("A message delta does not search."))
    change_type = request.query.get("changeType")
    if change_type is not None and change_type not in CHANGE_TYPES:
        raise ApiError(_bad_request("changeType: created, updated or deleted."))
    return _DeltaQuery(folder, tuple(clauses), change_type, _select(request))


def _changes(
    before: dict[str, _Seen], now: dict[str, _Seen], change_type: str | None
) -> list[tuple[str, _Seen]]:
    """What changed between two rounds: the messages new to the folder, those changed, and
    those that left it (deleted or moved), of `change_type`'s kind only if given."""
    found = [("created", seen) for key, seen in now.items() if key not in before]
    found += [
        ("updated", seen)
        for key, seen in now.items()
        if key in before and before[key].change_key != seen.change_key
    ]
    found += [("deleted", seen) for key, seen in before.items() if key not in now]
    return [(kind, seen) for kind, seen in found if change_type in (None, kind)]


def _page_size(request: Request) -> int:
    """Prefer: odata.maxpagesize={n}, else Graph's default."""
    for preference in request.headers.get("prefer", "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.lower() == "odata.maxpagesize" and value.isdigit():
            return max(1, min(int(value), _MAX_DELTA_PAGE))
    return _DELTA_PAGE
