"""Counting windows shared by the sending limits and the rate limit of connection tests:
calendar windows (UTC) whose counters live in DynamoDB, so limits hold across every Lambda
instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

_FORMATS = {"minute": "%Y-%m-%dT%H:%M", "hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d"}
_LENGTHS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


class Window(NamedTuple):
    name: str  # "minute", "hour" or "day"
    key: str  # the window's start, e.g. 2026-11-24T10
    limit: int
    ends_at: int  # epoch seconds

    def retry_after(self, now: datetime) -> int:
        return max(1, self.ends_at - int(now.timestamp()))


def window(name: str, limit: int, now: datetime) -> Window:
    now = now.astimezone(UTC)
    if name == "minute":
        start = now.replace(second=0, microsecond=0)
    elif name == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
    else:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = int((start + _LENGTHS[name]).timestamp())
    return Window(name, start.strftime(_FORMATS[name]), limit, end)
