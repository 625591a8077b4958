"""The histories an organization's admins read: an agent's, and the organization's, a page
at a time."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..agents.access import require_admin, require_person
from ..core.errors import ErrorCode, InvalidField, MailbridgeError, agent_not_found
from ..mail.ids import invalid_cursor, pack_cursor, unpack_cursor
from .history_models import AuditPage, HistoryQuery
from .models import time_key

if TYPE_CHECKING:
    from ..agents.models import Caller
    from ..storage.protocols import AgentStore, AuditLog


def agent_history(
    agents: AgentStore, log: AuditLog, caller: Caller, agent_id: str, query: HistoryQuery
) -> AuditPage:
    """An agent's entries, its removal's included: its organization's to read, found by the
    organization's partition of the index (another organization's agent of the same id has
    none there, and is 404 like every agent that is not the caller's, on every page: a
    cursor is not signed, so one made by hand may name any agent)."""
    require_admin(caller, "read the audit trail")
    page = _page(log, caller.org_id, agent_id, query)
    if not page.entries:
        agent, _ = agents.load(agent_id)
        if agent is None or agent.org_id != caller.org_id:
            raise agent_not_found(agent_id)
    return page


def org_history(log: AuditLog, caller: Caller, org_id: str, query: HistoryQuery) -> AuditPage:
    """Every entry of the organization: its agents, shared apps and client organizations."""
    require_person(caller)
    if org_id != caller.org_id:
        # Other organizations' settings are not disclosed, not even their existence.
        raise MailbridgeError(ErrorCode.NOT_FOUND, "No such organization in your account.")
    require_admin(caller, "read the audit trail")
    return _page(log, org_id, None, query)


# An entry's sort key: its time in UTC, then its id.
_SORT_KEY = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00#[0-9a-f]{32}"


def _within(sort_key: str, query: HistoryQuery) -> bool:
    at = sort_key.partition("#")[0]
    return bool(re.fullmatch(_SORT_KEY, sort_key)) and (
        (query.since is None or time_key(query.since) <= at)
        and (query.until is None or at <= time_key(query.until))
    )


def _page(log: AuditLog, org_id: str, agent_id: str | None, query: HistoryQuery) -> AuditPage:
    if query.since and query.until and query.since > query.until:
        raise InvalidField("since", "since must not be after until.")
    # A cursor goes on with the list it was made for: this history, this time range.
    # ("*": none; a packed part may not be empty). It holds only a position: the partition
    # read is the caller's organization's, whoever made the cursor.
    listing = (agent_id or "*", *(time_key(at) if at else "*" for at in (query.since, query.until)))
    after = unpack_cursor(query.cursor, "history", listing) if query.cursor else None
    if after is not None and not _within(after, query):
        raise invalid_cursor()  # made up: DynamoDB would refuse to start there
    entries, last = log.history(
        org_id, agent_id, since=query.since, until=query.until, after=after, limit=query.limit
    )
    cursor = pack_cursor("history", listing, last) if last else None
    return AuditPage(entries=entries, next_cursor=cursor)
