"""A client organization's email policy, enforced rather than only shown: the address an
agent sends from (at save and at authorization), and, before every message the agent
sends, its recipients and the organization's sending limits.

Limits count messages per client organization (all its agents together: they share the
sending domain and its reputation), in calendar hours and days (UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..core.errors import ErrorCode, InvalidField, LimitReached, MailbridgeError, agent_not_found
from ..core.windows import Window, window
from .models import ClientOrg, ClientOrgBanner

if TYPE_CHECKING:
    from ..storage.protocols import AgentStore, CounterStore, OrgStore


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


def banner(client_org: ClientOrg) -> ClientOrgBanner:
    warnings = []
    if client_org.email_domain:
        warnings.append(f"Sends only from @{client_org.email_domain} addresses.")
    if client_org.allowed_recipients:
        shown = ", ".join(client_org.allowed_recipients[:5])
        more = len(client_org.allowed_recipients) - 5
        warnings.append(f"May only write to {shown}" + (f" and {more} more." if more > 0 else "."))
    limits = client_org.limits
    if limits.per_hour:
        warnings.append(f"At most {limits.per_hour} messages per hour for the organization.")
    if limits.per_day:
        warnings.append(f"At most {limits.per_day} messages per day for the organization.")
    return ClientOrgBanner(
        id=client_org.client_org_id,
        name=client_org.name,
        email_domain=client_org.email_domain,
        allowed_recipients=client_org.allowed_recipients,
        limits=client_org.limits,
        warnings=warnings,
    )


def windows(client_org: ClientOrg, now: datetime) -> list[Window]:
    limits = client_org.limits
    found = [window("hour", limits.per_hour, now)] if limits.per_hour else []
    return found + ([window("day", limits.per_day, now)] if limits.per_day else [])


class SendingPolicy:
    """What an agent's sending path calls before every message it sends."""

    def __init__(self, agents: AgentStore, client_orgs: OrgStore, counters: CounterStore) -> None:
        self._agents = agents
        self._client_orgs = client_orgs
        self._counters = counters

    def authorize_message(
        self, agent_id: str, recipients: list[str], *, now: datetime | None = None
    ) -> None:
        """Allow one message to `recipients`, counting it against the limits; raise
        `recipients_not_allowed` or `sending_limit_reached` otherwise."""
        agent, _ = self._agents.load(agent_id)
        if agent is None:
            raise agent_not_found(agent_id)
        client_org_id = agent.client_org_id
        client_org = self._client_orgs.get(agent.org_id, client_org_id) if client_org_id else None
        if client_org is None:
            return
        refused = [address for address in recipients if not address_allowed(client_org, address)]
        if refused:
            raise MailbridgeError(
                ErrorCode.RECIPIENTS_NOT_ALLOWED,
                f"{client_org.name} does not allow writing to: {', '.join(refused)}.",
                field="recipients",
            )
        now = now or datetime.now(UTC)
        scope = f"SENDING#{client_org.org_id}#{client_org.client_org_id}"
        try:
            self._counters.count("SENT", [(scope, full) for full in windows(client_org, now)])
        except LimitReached as reached:
            full = reached.window
            raise MailbridgeError(
                ErrorCode.SENDING_LIMIT_REACHED,
                f"{client_org.name} has sent its {full.limit} messages for this {full.name}.",
                hint=f"Sending resumes in {full.retry_after(now)} seconds.",
                retry_after=full.retry_after(now),
            ) from None
