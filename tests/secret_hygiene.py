"""Secret hygiene over the whole suite: everything the service lets out (every response the
local API answers, every log line) is kept, and at the end of the run it is searched for
every secret the run used. Those are canaries: the mail servers' passwords, and everything
the fake identity providers handed out or received (client secrets, authorization codes,
access and refresh tokens, PKCE verifiers).

The search is for each canary as a substring of everything kept, so a canary glued to other
text is found too. Canaries are made of characters that JSON, HTML and URL encoding leave as
they are, so a leak in any of those forms is the canary itself.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import Counter


class SecretHygiene:
    def __init__(self) -> None:
        self._texts: list[str] = []
        self._wheres: list[str] = []
        self._lock = threading.Lock()
        self.kept: Counter[str] = Counter()  # how many texts of each kind were kept
        self.test = "(setup)"  # the test running, to say where a leak happened

    def keep(self, kind: str, text: str) -> None:
        with self._lock:
            self.kept[kind] += 1
            self._texts.append(text)
            self._wheres.append(f"{kind} during {self.test}")

    def leaks(self, canaries: set[str]) -> dict[str, str]:
        """Where each canary that leaked was first seen."""
        with self._lock:
            texts, wheres = list(self._texts), list(self._wheres)
        everything = "\0".join(texts)
        starts = [0]
        for text in texts[:-1]:
            starts.append(starts[-1] + len(text) + 1)
        found: dict[str, str] = {}
        for canary in canaries:
            at = everything.find(canary)
            if at >= 0:
                found[canary] = wheres[bisect.bisect_right(starts, at) - 1]
        return found


class KeptLogLines(logging.Handler):
    """Every log record, formatted as it would be written, kept for the search."""

    def __init__(self, hygiene: SecretHygiene, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self._hygiene = hygiene
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self._hygiene.keep("log line", self.format(record))
