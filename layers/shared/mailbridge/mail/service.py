"""The agent's mail, through its connection: list, read, download an attachment, mark read or
unread, send and reply.

Every use case opens the agent's mailbox with the credential its connection needs (the stored
password, or an access token from the one refresh path) and keeps the agent's status honest:
an authentication or authorization failure turns it to Error with the classified last error,
exactly as a connection test would; a later success brings it back to Connected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..agents.access import load_agent_for_its_mail
from ..agents.models import Agent, Caller
from ..connections.models import ImapConnection, LastError, Problem, Status, StoredConfig
from ..core.errors import ErrorCode, InvalidField, MailbridgeError, MailServerError, ProviderError
from ..oauth.tokens import fresh_access_token
from ..orgs.models import ClientOrg
from ..orgs.sending_policy import authorize_message, give_back, require_email_domain
from .compose import compose, reply_subject
from .mailboxes import FetchedMessage, Mailbox, open_mailbox
from .models import (
    MAX_ATTACHMENT_BYTES,
    MAX_RECIPIENTS,
    AttachmentInfo,
    Folder,
    Message,
    MessagePage,
    SendRequest,
    SentMessage,
)
from .parsing import ParsedMessage, attachment, parse_message

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, CounterStore, OrgStore, SecretStore

# Failures that say the connection itself is broken until someone fixes it: they turn the
# agent to Error. Anything else (a timeout, throttling, one refused recipient) is answered
# and leaves the status alone.
_BREAKS_THE_CONNECTION = frozenset(
    {
        ErrorCode.AUTH_FAILED,
        ErrorCode.AUTH_UNAVAILABLE,
        ErrorCode.REAUTHORIZATION_REQUIRED,
        ErrorCode.OAUTH_CLIENT_INVALID,
        ErrorCode.PERMISSION_MISSING,
        ErrorCode.OAUTH_APP_MISSING,
        ErrorCode.OAUTH_APP_REMOVED,
    }
)
# What Lambda can answer: 6 MB in all, and base64 makes 4 bytes of 3.
MAX_DOWNLOAD_BYTES = 4 * 1024 * 1024


class Stores:
    """The stores every mail use case needs, as the handler built them."""

    def __init__(
        self, agents: AgentStore, secrets: SecretStore, orgs: OrgStore, counters: CounterStore
    ) -> None:
        self.agents, self.secrets, self.orgs, self.counters = agents, secrets, orgs, counters


@contextmanager
def _mailbox(stores: Stores, agent: Agent, config: StoredConfig) -> Iterator[Mailbox]:
    """The agent's mailbox, open with its credential, recording what its use says of the
    connection."""
    with _recording(stores.agents, config):
        if isinstance(config.connection, ImapConnection):
            assert config.secret is not None  # an IMAP connection is saved with its password
            credential = stores.secrets.read(config.secret)[0]["password"]
        else:
            credential = fresh_access_token(
                stores.agents, stores.secrets, stores.orgs, agent, config
            ).access_token
        with open_mailbox(config.connection, credential) as mailbox:
            yield mailbox


@contextmanager
def _recording(agents: AgentStore, config: StoredConfig) -> Iterator[None]:
    try:
        yield
    except (ProviderError, MailServerError) as failure:
        if failure.code in _BREAKS_THE_CONNECTION:
            _record(agents, config, Status.ERROR, failure)
        raise
    if config.status in (Status.ERROR, Status.CONFIGURED):
        _record(agents, config, Status.CONNECTED, None)


def _record(
    agents: AgentStore, config: StoredConfig, status: Status, failure: MailbridgeError | None
) -> None:
    """Best effort and only over the version that was used: a save meanwhile wins."""
    last_error = (
        LastError(**Problem.of(failure).model_dump(), at=datetime.now(UTC)) if failure else None
    )
    agents.update_status(config.model_copy(update={"status": status, "last_error": last_error}))


def _connected(stores: Stores, caller: Caller, agent_id: str) -> tuple[Agent, StoredConfig]:
    agent, config = load_agent_for_its_mail(stores.agents, caller, agent_id)
    if config is None:
        raise MailbridgeError(
            ErrorCode.NOT_CONFIGURED,
            "This agent has no email connection.",
            hint="Connect a mailbox in the Email tab first.",
        )
    return agent, config


# ---- reading ---------------------------------------------------------------------------


def list_messages(
    stores: Stores,
    caller: Caller,
    agent_id: str,
    *,
    folder: Folder,
    unread_only: bool,
    cursor: str | None,
    limit: int,
) -> MessagePage:
    agent, config = _connected(stores, caller, agent_id)
    with _mailbox(stores, agent, config) as mailbox:
        return mailbox.list_messages(folder, unread_only=unread_only, cursor=cursor, limit=limit)


def _message(fetched: FetchedMessage) -> Message:
    parsed = parse_message(fetched.raw)
    return Message(
        id=fetched.id,
        thread_id=fetched.thread_id,
        folder=fetched.folder,
        sender=parsed.sender,
        to=parsed.to,
        subject=parsed.subject,
        received_at=fetched.received_at,
        read=fetched.read,
        message_id=parsed.message_id,
        cc=parsed.cc,
        reply_to=parsed.reply_to,
        date=parsed.date,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        text=parsed.text,
        html=parsed.html,
        truncated=parsed.truncated,
        attachments=parsed.attachments,
    )


def get_message(stores: Stores, caller: Caller, agent_id: str, message_id: str) -> Message:
    agent, config = _connected(stores, caller, agent_id)
    with _mailbox(stores, agent, config) as mailbox:
        return _message(mailbox.fetch(message_id))


def get_attachment(
    stores: Stores, caller: Caller, agent_id: str, message_id: str, attachment_id: str
) -> tuple[AttachmentInfo, bytes]:
    agent, config = _connected(stores, caller, agent_id)
    with _mailbox(stores, agent, config) as mailbox:
        fetched = mailbox.fetch(message_id)
    found = attachment(fetched.raw, attachment_id)
    if found is None:
        raise MailbridgeError(
            ErrorCode.ATTACHMENT_NOT_FOUND, "This message has no such attachment."
        )
    info, content = found
    if len(content) > MAX_DOWNLOAD_BYTES:
        raise MailbridgeError(
            ErrorCode.ATTACHMENT_TOO_LARGE,
            f"The attachment is {len(content)} bytes; this API returns at most "
            f"{MAX_DOWNLOAD_BYTES}.",
            hint="Open it in the mailbox itself.",
        )
    return info, content


def set_read(stores: Stores, caller: Caller, agent_id: str, message_id: str, read: bool) -> None:
    agent, config = _connected(stores, caller, agent_id)
    with _mailbox(stores, agent, config) as mailbox:
        mailbox.set_read(message_id, read)


# ---- sending ---------------------------------------------------------------------------


def _check_request(request: SendRequest) -> None:
    """What the request's fields cannot say alone, each naming the field at fault."""
    if request.text is None and request.html is None:
        raise InvalidField("text", "text or html is required.")
    if len(request.to) + len(request.cc) + len(request.bcc) > MAX_RECIPIENTS:
        raise InvalidField("to", f"At most {MAX_RECIPIENTS} recipients in all (to, cc, bcc).")
    if sum(len(attached.data) for attached in request.attachments) > MAX_ATTACHMENT_BYTES:
        raise InvalidField(
            "attachments", f"Attachments may take at most {MAX_ATTACHMENT_BYTES} bytes in all."
        )
    if request.reply_to_message_id is None:
        if not (request.to or request.cc or request.bcc):
            raise InvalidField("to", "to, cc or bcc is required for a new message.")
        if request.subject is None:
            raise InvalidField("subject", "subject is required for a new message.")


def _sender(config: StoredConfig, client_org: ClientOrg | None) -> str:
    """The connection's own address, which must fit the client organization's domain."""
    connection = config.connection
    if isinstance(connection, ImapConnection):
        address = connection.email
    else:
        assert connection.authorization is not None  # a token was handed out for it
        address = connection.authorization.email
    try:
        require_email_domain(client_org, address, "from")
    except InvalidField as outside:
        raise MailbridgeError(
            ErrorCode.EMAIL_DOMAIN_NOT_ALLOWED, outside.message, hint=outside.hint
        ) from None
    return address


def _reply_recipients(original: ParsedMessage) -> list[str]:
    """Whom a reply goes to by default: the original's Reply-To (RFC 5322), else its sender."""
    chosen = original.reply_to or ([original.sender] if original.sender else [])
    return [address.address for address in chosen]


def send_message(
    stores: Stores,
    caller: Caller,
    agent_id: str,
    request: SendRequest,
    *,
    idempotency_key: str,
) -> SentMessage:
    """Send a new message or a reply, once the client organization's policy allows it: its
    recipients, its hourly and daily limits (counted before anything leaves, given back if
    nothing did), and the sending address's domain."""
    _check_request(request)
    agent, config = _connected(stores, caller, agent_id)
    _, client_org = stores.orgs.agent_context(agent.org_id, agent.client_org_id)
    sender = _sender(config, client_org)
    now = datetime.now(UTC)
    with _mailbox(stores, agent, config) as mailbox:
        original = None
        if request.reply_to_message_id is not None:
            original = mailbox.fetch(request.reply_to_message_id)
        replying_to = parse_message(original.raw) if original else None
        to = request.to
        if replying_to is not None and not request.to:
            to = _reply_recipients(replying_to)
        outgoing = compose(
            sender=sender,
            sender_name=request.sender_name or agent.name,
            to=to,
            cc=request.cc,
            bcc=request.bcc,
            subject=request.subject
            if request.subject is not None
            else reply_subject(replying_to.subject if replying_to else ""),
            text=request.text,
            html=request.html,
            attachments=request.attachments,
            replying_to=replying_to,
            now=now,
            message_key=f"{agent_id}\n{idempotency_key}",
        )
        if not outgoing.recipients:
            raise InvalidField("to", "The original message names no one to reply to.")
        counted = authorize_message(stores.counters, client_org, outgoing.recipients, now=now)
        try:
            delivered = mailbox.send(outgoing, replying_to=original)
        except MailbridgeError:
            give_back(stores.counters, counted)
            raise
    return SentMessage(
        id=delivered.id,
        thread_id=delivered.thread_id,
        message_id=outgoing.message_id,
        recipients=outgoing.recipients,
        refused=delivered.refused,
        sent_at=now,
    )
