"""What the audit trail's routes take and give: a history's query and a page of entries,
apart from the entries that every function recording a change loads (`.models`)."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

from ..core.types import Model
from .models import AuditEntry


def _in_utc(at: datetime) -> datetime:
    try:
        return at.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise ValueError("must be a time between the years 1 and 9999 in UTC") from None


# A time a history is filtered by: with its offset (which day is 2026-01-01T00:00 else?).
UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class HistoryQuery(Model):
    """The query of a history route, as the route validated it."""

    since: UtcTime | None = None
    until: UtcTime | None = None
    cursor: str | None = None
    limit: int = 50


class AuditPage(Model):
    entries: list[AuditEntry] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; None: last.")
