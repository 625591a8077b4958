"""Connection-test latency over a slow network (issue 7): the IMAP and SMTP checks through
proxies adding 100 ms each way. The checks overlap, a 50,000-message mailbox costs what a
10-message one does, and no check gains a round trip. `make bench` prints the figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mailbridge_bench.latency import (
    CONCURRENCY_BUDGET,
    IMAP_TLS_MINIMUM,
    MAILBOX_SIZE_BUDGET,
    ONE_WAY_DELAY,
    SMTP_STARTTLS_MINIMUM,
    LatencyReport,
    Mailbox,
    MailLab,
)
from mailbridge_tools.sandbox import dovecot_binary
from support import require_component

# Today's round trips; each is above its minimum by avoidable waits that BENCHMARKS.md names
# (IMAP: imaplib's CAPABILITY and LOGOUT's answer; SMTP: QUIT's answer). Fewer is welcome.
IMAP_ROUND_TRIPS = 7
SMTP_ROUND_TRIPS = 8


@pytest.fixture(scope="module")
def latency(local_api: Any, server_cert: tuple[Path, Path]) -> Iterator[LatencyReport]:
    # local_api: this process's mail settings (loopback, high ports, the test CA) are the
    # API's, read once per process; the checks run here under them.
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    small, large = Mailbox("few@example.com", 10), Mailbox("many@example.com", 50_000)
    with MailLab(*server_cert, small, large) as lab:
        yield lab.measure(runs=1, direct_runs=1)


def test_the_two_checks_run_concurrently(latency: LatencyReport) -> None:
    slower = max(latency.imap.seconds, latency.smtp.seconds)
    assert latency.concurrency_ratio <= CONCURRENCY_BUDGET, (latency.both, slower)


def test_a_large_mailbox_tests_as_fast_as_a_small_one(latency: LatencyReport) -> None:
    assert latency.mailbox_size_ratio <= MAILBOX_SIZE_BUDGET, (latency.both_large, latency.both)


def test_no_check_gains_a_round_trip(latency: LatencyReport) -> None:
    assert len(IMAP_TLS_MINIMUM) <= latency.imap.round_trips <= IMAP_ROUND_TRIPS
    assert len(SMTP_STARTTLS_MINIMUM) <= latency.smtp.round_trips <= SMTP_ROUND_TRIPS
    # Each round trip costs a delay each way: the counts and the times agree.
    for check in (latency.imap, latency.smtp):
        assert check.seconds >= 2 * ONE_WAY_DELAY * check.round_trips
