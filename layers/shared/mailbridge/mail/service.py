"""The agent's mail, through its connection: list, read, download an attachment, mark read or
unread (sending and replying are in `.sending`, which builds on this).

Every use case opens the agent's mailbox with the credential its connection needs (the stored
password, or an access token from the one refresh path) and keeps the agent's status honest:
an authentication or authorization failure turns it to Error with the classified last error,
exactly as a connection test would, noting whether reading or sending failed; a later success
of the same use brings it back to Connected (reading says nothing of sending: an IMAP login
is not SMTP's, a grant may allow one and not the other).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..agents.access import load_agent_for_its_mail
from ..agents.models import Agent, Caller
from ..audit.models import SERVICE, AuditAction
from ..audit.service import connection_entry
from ..connections.records import ImapConnection, LastError, MailUse, Problem, Status, StoredConfig
from ..core.errors import Cause, ErrorCode, MailbridgeError, MailServerError, ProviderError
from ..core.observability import logger
from ..oauth.scopes import grant_problems
from .mailboxes import FetchedMessage, Mailbox, open_mailbox
from .models import AttachmentInfo, Folder, Message, MessagePage
from .parsing import attachment, parse_message

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, OrgStore, SecretStore

# Failures that say the connection itself is broken until someone fixes it: they turn the
# agent to Error. Anything else (a timeout, throttling, one refused recipient) is answered
# and leaves the status alone.
BREAKS_THE_CONNECTION = frozenset(
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
_APP_CAUSES = frozenset({Cause.SHARED_APP_SECRET_REFUSED})
# What Lambda can answer: 6 MB in all, and base64 makes 4 bytes of 3.
MAX_DOWNLOAD_BYTES = 4 * 1024 * 1024


class Stores:
    """The stores reading the agent's mail needs, as the handler built them."""

    def __init__(self, agents: AgentStore, secrets: SecretStore, orgs: OrgStore) -> None:
        self.agents, self.secrets, self.orgs = agents, secrets, orgs


@contextmanager
def agent_mailbox(
    stores: Stores, agent: Agent, config: StoredConfig, use: MailUse
) -> Iterator[Mailbox]:
    """The agent's mailbox, open with its credential, recording what its use says of the
    connection."""
    with _recording(stores.agents, agent, config, use):
        if isinstance(config.connection, ImapConnection):
            assert config.secret is not None  # an IMAP connection is saved with its password
            credential = stores.secrets.read(config.secret)[0]["password"]
        else:
            # The token path is OAuth's alone: an IMAP mailbox never loads it.
            from ..oauth.tokens import fresh_access_token

            grant = fresh_access_token(stores.agents, stores.secrets, stores.orgs, agent, config)
            _, cannot_send = grant_problems(config.connection.provider, grant.granted_scopes)
            if use == "sending" and cannot_send is not None:
                # Refused before the provider is asked: the connection still receives, so
                # it stays Connected (its view warns of this).
                raise cannot_send
            credential = grant.access_token
        with open_mailbox(config.connection, credential) as mailbox:
            yield mailbox


@contextmanager
def _recording(
    agents: AgentStore, agent: Agent, config: StoredConfig, use: MailUse
) -> Iterator[None]:
    try:
        yield
    except (ProviderError, MailServerError) as failure:
        # A shared app's refused secret is the app's, shown on its agents at read until it is
        # rotated: recorded on each, it would outlive the rotation.
        app_level = isinstance(failure, ProviderError) and failure.cause in _APP_CAUSES
        if failure.code in BREAKS_THE_CONNECTION and not app_level:
            # Over IMAP/SMTP the protocol says which use failed: a reply reads its original
            # over IMAP before SMTP sends it.
            if isinstance(failure, MailServerError):
                use = "reading" if failure.protocol == "IMAP" else "sending"
            problem = Problem.of(failure).model_dump()
            last_error = LastError(**problem, at=datetime.now(UTC), during=use)
            _record(agents, agent, config, Status.ERROR, last_error)
        raise
    failed = config.last_error
    if config.status is Status.CONFIGURED or (
        config.status is Status.ERROR and failed is not None and failed.during == use
    ):
        _record(agents, agent, config, Status.CONNECTED, None)


def _record(
    agents: AgentStore,
    agent: Agent,
    config: StoredConfig,
    status: Status,
    last_error: LastError | None,
) -> None:
    """Best effort and only over the version that was used: a save meanwhile wins. What the
    use itself did stands either way: a message that left must not be reported as failed
    because its status could not be written (its retry would send it again). The service
    changed it, whoever's use it was: what it found is the connection's."""

    def problem(error: LastError | None) -> tuple[str, str | None] | None:
        return (error.code, error.during) if error else None

    if status is config.status and problem(last_error) == problem(config.last_error):
        return  # as recorded already: a runtime retrying a broken mailbox changes nothing
    changed = config.with_status(status, last_error)
    entry = connection_entry(agent, SERVICE, AuditAction.STATUS_CHANGED, config, changed)
    if last_error is not None:
        entry = entry.failed(last_error.code, last_error.message)
    try:
        agents.update_status(changed, entry)
    except MailbridgeError as unrecorded:
        logger.warning("status not recorded", extra={"error_code": unrecorded.code})


def connected_agent(stores: Stores, caller: Caller, agent_id: str) -> tuple[Agent, StoredConfig]:
    agent, config = load_agent_for_its_mail(stores.agents, caller, agent_id)
    if config is None:
        raise MailbridgeError(
            ErrorCode.NOT_CONFIGURED,
            "This agent has no email connection.",
            hint="Connect a mailbox in the Email tab first.",
        )
    return agent, config


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
    agent, config = connected_agent(stores, caller, agent_id)
    with agent_mailbox(stores, agent, config, "reading") as mailbox:
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
    agent, config = connected_agent(stores, caller, agent_id)
    with agent_mailbox(stores, agent, config, "reading") as mailbox:
        return _message(mailbox.fetch(message_id))


def get_attachment(
    stores: Stores, caller: Caller, agent_id: str, message_id: str, attachment_id: str
) -> tuple[AttachmentInfo, bytes]:
    agent, config = connected_agent(stores, caller, agent_id)
    with agent_mailbox(stores, agent, config, "reading") as mailbox:
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
    agent, config = connected_agent(stores, caller, agent_id)
    with agent_mailbox(stores, agent, config, "reading") as mailbox:
        mailbox.set_read(message_id, read)
