"""The event the new-mail feed sends for each new message (on the bus: source `mailbridge`,
detail type `Mail Received`). Those two names stay in `.models`: the feed's store sends the
event without loading this module, nor the mail models it embeds."""

import hashlib
from datetime import datetime

from pydantic import Field

from ..core.types import Model
from ..mail.models import Address, MessageSummary


class MailReceived(Model):
    """The event's detail: one new message of one agent's inbox."""

    event_id: str = Field(
        description="The same for every delivery of this message to this agent's connection: "
        "EventBridge delivers at least once, so a consumer that must never act twice keeps it."
    )
    agent_id: str
    org_id: str
    client_org_id: str | None
    message_id: str = Field(description="The mail API's id: read or reply with it.")
    thread_id: str
    sender: Address | None = Field(description="The From address.")
    subject: str
    received_at: datetime

    @classmethod
    def of(
        cls,
        agent_id: str,
        org_id: str,
        client_org_id: str | None,
        connected_at: datetime,
        message: MessageSummary,
    ) -> "MailReceived":
        """For the connection made at `connected_at`: another mailbox's message may have the
        same id (an IMAP UID under the same UIDVALIDITY), and is another message."""
        key = f"{agent_id}\x1f{connected_at.isoformat()}\x1f{message.id}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        return cls(
            event_id=digest[:32],
            agent_id=agent_id,
            org_id=org_id,
            client_org_id=client_org_id,
            message_id=message.id,
            thread_id=message.thread_id,
            sender=message.sender,
            subject=message.subject,
            received_at=message.received_at,
        )
