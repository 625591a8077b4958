"""Sending a new message or a reply through the agent's connection, as the client
organization's policy allows: its recipients, its sending limits and its address's domain,
exactly once per idempotency key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..agents.models import Agent, Caller
from ..audit.models import Actor, AuditAction
from ..audit.service import record_refusal
from ..connections.records import ImapConnection, StoredConfig
from ..core.errors import ErrorCode, InvalidField, MailbridgeError
from ..orgs.records import ClientOrg
from ..orgs.sending_policy import authorize_message, give_back, policy_refusal
from .compose import compose, reply_subject
from .models import MAX_ATTACHMENT_BYTES, MAX_RECIPIENTS, SendRequest, SentMessage
from .parsing import ParsedMessage, parse_message
from .service import Stores, agent_mailbox, connected_agent

if TYPE_CHECKING:
    from ..storage.protocols import (
        AgentStore,
        AuditLog,
        CounterStore,
        OrgStore,
        SecretStore,
        SendRecords,
    )


class SendStores(Stores):
    """...and sending: the counters of the client organization's limits, and the audit
    trail of the sends its policy refuses."""

    def __init__(
        self,
        agents: AgentStore,
        secrets: SecretStore,
        orgs: OrgStore,
        counters: CounterStore,
        log: AuditLog,
    ) -> None:
        super().__init__(agents, secrets, orgs)
        self.counters, self.log = counters, log


def _check_request(request: SendRequest) -> None:
    """What the request's fields cannot say alone, each naming the field at fault."""
    if request.text is None and request.html is None:
        raise InvalidField("text", "text or html is required.")
    if sum(len(attached.data) for attached in request.attachments) > MAX_ATTACHMENT_BYTES:
        raise InvalidField(
            "attachments", f"Attachments may take at most {MAX_ATTACHMENT_BYTES} bytes in all."
        )
    if request.reply_to_message_id is None:
        if not (request.to or request.cc or request.bcc):
            raise InvalidField("to", "to, cc or bcc is required for a new message.")
        if request.subject is None:
            raise InvalidField("subject", "subject is required for a new message.")


def _sender(agent: Agent, config: StoredConfig, client_org: ClientOrg | None) -> str:
    """The connection's own address, once the policy allows it (see policy_refusal)."""
    refused = policy_refusal(agent, client_org, config.addresses)
    if refused is not None:
        raise refused
    connection = config.connection
    if isinstance(connection, ImapConnection):
        return connection.email
    assert connection.authorization is not None  # a token was handed out for it
    return connection.authorization.email


def _reply_recipients(original: ParsedMessage) -> list[str]:
    """Whom a reply goes to by default: the original's Reply-To (RFC 5322), else its sender.
    They come from someone else's message, already read as addresses: held to a request's
    own limits, and never to From when Reply-To asked for someone this cannot write to."""
    if original.reply_to_dropped:
        raise InvalidField(
            "to",
            "The message replied to asks for replies to an address this service cannot write to.",
            hint="Give `to` explicitly.",
        )
    chosen = original.reply_to or ([original.sender] if original.sender else [])
    if not chosen:
        raise InvalidField("to", "The message replied to names no one to reply to.")
    if len(chosen) > MAX_RECIPIENTS:
        raise InvalidField(
            "to",
            f"The message replied to asks for replies to more than {MAX_RECIPIENTS} addresses.",
            hint="Give `to` explicitly.",
        )
    return [address.address for address in chosen]


# What the client organization's policy refuses: recorded in the audit trail. Its sending
# limits are not: a runtime retrying until the window opens would fill the trail.
_POLICY_REFUSALS = {
    ErrorCode.RECIPIENTS_NOT_ALLOWED,
    ErrorCode.EMAIL_DOMAIN_NOT_ALLOWED,
    ErrorCode.CLIENT_ORG_MISSING,
}


def send_message(
    stores: SendStores,
    sends: SendRecords,
    caller: Caller,
    agent_id: str,
    request: SendRequest,
    *,
    idempotency_key: str,
) -> SentMessage:
    """Send a new message or a reply, exactly once per `idempotency_key`, once the client
    organization's policy allows it: its recipients, its hourly and daily limits (counted
    before anything leaves, given back if nothing did), and the sending address's domain.
    Who may send is checked before the key is looked at: another caller's key reveals
    nothing."""
    _check_request(request)
    agent, config = connected_agent(stores, caller, agent_id)
    payload = request.model_dump(mode="json")
    # The same send (key and request) always has the same Message-ID; a key used again after
    # it expired, for another message, another one.
    message_key = "\n".join([agent_id, idempotency_key, json.dumps(payload, sort_keys=True)])
    try:
        return sends.once(
            agent_id,
            idempotency_key,
            payload,
            lambda: _send(stores, agent, config, request, message_key),
        )
    except MailbridgeError as refused:
        if refused.code in _POLICY_REFUSALS:
            sending = AuditAction.SEND_REFUSED
            record_refusal(stores.log, agent, Actor.of(caller), sending, refused.code, refused)
        raise


def _send(
    stores: SendStores, agent: Agent, config: StoredConfig, request: SendRequest, message_key: str
) -> SentMessage:
    _, client_org = stores.orgs.agent_context(agent.org_id, agent.client_org_id)
    sender = _sender(agent, config, client_org)
    now = datetime.now(UTC)
    with agent_mailbox(stores, agent, config, "sending") as mailbox:
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
            message_key=message_key,
        )
        if len(outgoing.recipients) > MAX_RECIPIENTS:
            raise InvalidField("to", f"At most {MAX_RECIPIENTS} recipients in all (to, cc, bcc).")
        counted = authorize_message(stores.counters, client_org, outgoing.recipients, now=now)
        try:
            delivered = mailbox.send(outgoing, replying_to=original)
        except Exception:
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
