"""Secret hygiene over the whole suite: everything the service lets out (every response the
local API answers, every log line) is kept, and at the end of the run it is searched for
every secret the run used. Those are canaries: the mail servers' passwords, and everything
the fake identity providers handed out or received (client secrets, authorization codes,
access and refresh tokens, PKCE verifiers).

What is kept is indexed by its runs of the characters canaries are made of (URL-safe
base64, and PKCE's unreserved characters, with and without '.' and '~'): a canary that leaks
stands between delimiters (quotes, spaces, '=', '&'), so it is a run of its own, and one set
lookup per canary finds it however many megabytes the suite produced.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter

_RUNS = (re.compile(r"[A-Za-z0-9_\-]{8,}"), re.compile(r"[A-Za-z0-9_\-.~]{8,}"))


class SecretHygiene:
    def __init__(self) -> None:
        self._runs: dict[str, str] = {}  # a run of characters -> where it was first seen
        self._lock = threading.Lock()
        self.kept: Counter[str] = Counter()  # how many texts of each kind were kept
        self.test = "(setup)"  # the test running, to say where a leak happened

    def keep(self, kind: str, text: str) -> None:
        where = f"{kind} during {self.test}"
        with self._lock:
            self.kept[kind] += 1
            for runs in _RUNS:
                for run in runs.findall(text):
                    self._runs.setdefault(run, where)

    def leaks(self, canaries: set[str]) -> dict[str, str]:
        """Where each canary that leaked was first seen."""
        unsearchable = {c for c in canaries if not any(runs.fullmatch(c) for runs in _RUNS)}
        assert not unsearchable, f"canaries outside the searched alphabet: {unsearchable}"
        with self._lock:
            return {canary: self._runs[canary] for canary in canaries if canary in self._runs}


class KeptLogLines(logging.Handler):
    """Every log record, formatted as it would be written, kept for the search."""

    def __init__(self, hygiene: SecretHygiene, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self._hygiene = hygiene
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self._hygiene.keep("log line", self.format(record))
