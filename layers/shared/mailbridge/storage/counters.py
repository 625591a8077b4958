"""Counters in calendar windows (sending limits, test rate limits), one item per window."""

from __future__ import annotations

from ..core.errors import LimitReached, StaleWrite
from ..core.settings import settings
from ..core.windows import Window
from .aws import conditional_write


class DynamoCounterStore:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or settings().table_name

    def count(self, kind: str, windows: list[tuple[str, Window]]) -> None:
        """Each window is one conditional increment (atomic in DynamoDB), so concurrent
        callers never push a window past its limit. When one is full, the increments already
        made are given back. (Not one transaction: moto restores whole tables when a
        transaction fails, which would lose concurrent writes in the tests.)"""
        counted: list[tuple[str, Window]] = []
        for scope, window in windows:
            try:
                self._add(scope, kind, window, 1)
            except StaleWrite:
                self.give_back(kind, counted)
                raise LimitReached(scope, window) from None
            counted.append((scope, window))

    def give_back(self, kind: str, windows: list[tuple[str, Window]]) -> None:
        for scope, window in windows:
            self._add(scope, kind, window, -1)

    def _add(self, scope: str, kind: str, window: Window, amount: int) -> None:
        condition = {}
        if amount > 0:
            condition = {"ConditionExpression": "attribute_not_exists(hits) OR hits < :limit"}
        conditional_write(
            self.table,
            "update_item",
            Key={"pk": {"S": scope}, "sk": {"S": f"{kind}#{window.name}#{window.key}"}},
            UpdateExpression="ADD hits :amount SET expires_at = :expires",
            ExpressionAttributeValues={
                ":amount": {"N": str(amount)},
                ":expires": {"N": str(window.ends_at + 86400)},
                **({":limit": {"N": str(window.limit)}} if amount > 0 else {}),
            },
            **condition,
        )
