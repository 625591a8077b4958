"""A client organization's email policy, enforced rather than only shown: the address an
agent sends from (at save and at authorization), and, before every message the agent
sends, its recipients and the organization's sending limits.

Limits count messages per client organization (all its agents together: they share the
sending domain and its reputation), in calendar hours and days (UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from ..core.errors import ErrorCode, InvalidField, LimitReached, MailbridgeError
from ..core.windows import Window, window
from .records import ClientOrg

if TYPE_CHECKING:
    from ..agents.models import Agent
    from ..storage.protocols import CounterStore

_SENT = "SENT"


def address_allowed(client_org: ClientOrg, address: str) -> bool:
    if not client_org.allowed_recipients:
        return True
    address = address.strip().lower()
    domain = address.rpartition("@")[2]
    return address in client_org.allowed_recipients or domain in client_org.allowed_recipients


def require_email_domain(client_org: ClientOrg | None, email: str, field: str) -> None:
    """Refuse an address outside the client organization's sending domain."""
    domain = client_org.email_domain if client_org else None
    if domain and email.rpartition("@")[2].lower() != domain:
        raise InvalidField(
            field,
            f"Agents of {client_org.name if client_org else ''} send from @{domain} addresses.",
            hint=f"Use the agent's @{domain} mailbox.",
        )


def addresses_outside(client_org: ClientOrg | None, addresses: list[str]) -> MailbridgeError | None:
    """`email_domain_not_allowed` if an address the agent sends as is outside its client
    organization's domain: a connection saved before the policy, or before a change of it,
    which no save or sign-in checked. Worked out wherever it matters (a read, a test, a
    send), so a policy change reaches every agent at once with nothing written."""
    for address in addresses:
        try:
            require_email_domain(client_org, address, "from")
        except InvalidField as outside:
            return MailbridgeError(
                ErrorCode.EMAIL_DOMAIN_NOT_ALLOWED, outside.message, hint=outside.hint
            )
    return None


def policy_refusal(
    agent: Agent, client_org: ClientOrg | None, addresses: list[str]
) -> MailbridgeError | None:
    """Why the agent's connection breaks its client organization's policy as it is now, if
    it does: the client organization deleted since the agent was registered under it
    (applying no policy would fail open), or an address outside its domain."""
    if agent.client_org_id is not None and client_org is None:
        return MailbridgeError(
            ErrorCode.CLIENT_ORG_MISSING,
            f"This agent's client organization {agent.client_org_id!r} no longer exists, so "
            "its email policy cannot be applied: the agent cannot send.",
            hint="Save the client organization's email policy again, or register the agent "
            "without it.",
        )
    return addresses_outside(client_org, addresses)


def windows(client_org: ClientOrg, now: datetime) -> list[Window]:
    limits = client_org.limits
    found = [window("hour", limits.per_hour, now)] if limits.per_hour else []
    return found + ([window("day", limits.per_day, now)] if limits.per_day else [])


class Counted(NamedTuple):
    """What one message counted, to give it back if it never left."""

    kind: str
    windows: list[tuple[str, Window]]


def authorize_message(
    counters: CounterStore,
    client_org: ClientOrg | None,
    recipients: list[str],
    *,
    now: datetime | None = None,
) -> Counted:
    """Allow one message to `recipients` and count it against the limits, or refuse it with
    `recipients_not_allowed` (naming them) or `sending_limit_reached` (with Retry-After)."""
    if client_org is None:
        return Counted(_SENT, [])
    refused = [address for address in recipients if not address_allowed(client_org, address)]
    if refused:
        raise MailbridgeError(
            ErrorCode.RECIPIENTS_NOT_ALLOWED,
            f"{client_org.name} does not allow writing to: {', '.join(refused)}.",
            field="recipients",
        )
    now = now or datetime.now(UTC)
    scope = f"SENDING#{client_org.org_id}#{client_org.client_org_id}"
    counted = Counted(_SENT, [(scope, full) for full in windows(client_org, now)])
    try:
        counters.count(counted.kind, counted.windows)
    except LimitReached as reached:
        full = reached.window
        raise MailbridgeError(
            ErrorCode.SENDING_LIMIT_REACHED,
            f"{client_org.name} has sent its {full.limit} messages for this {full.name}.",
            hint=f"Sending resumes in {full.retry_after(now)} seconds.",
            retry_after=full.retry_after(now),
        ) from None
    return counted


def give_back(counters: CounterStore, counted: Counted) -> None:
    """A message that was counted but never left does not count."""
    if counted.windows:
        counters.give_back(counted.kind, counted.windows)
