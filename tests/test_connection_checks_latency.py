"""Connection-test latency over a slow network (issue 7): the IMAP and SMTP checks through
proxies adding 100 ms each way. The checks overlap, a 50,000-message mailbox costs what a
10-message one does, and no check gains a round trip; so do the mail routes' pages, of all
messages and of the unread (issue 11). `make bench` prints the figures."""

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
    SEND_BUDGET,
    SMTP_SEND_MINIMUM,
    SMTP_STARTTLS_MINIMUM,
    UNREAD_BYTES_BUDGET,
    LatencyReport,
    Mailbox,
    MailLab,
    MailLatency,
)
from mailbridge_tools.sandbox import dovecot_binary
from support import require_component

# The protocols' minimum (docs/benchmarks.md): the capabilities come with the IMAP greeting,
# and LOGOUT and QUIT go unanswered.
IMAP_ROUND_TRIPS = len(IMAP_TLS_MINIMUM)
SMTP_ROUND_TRIPS = len(SMTP_STARTTLS_MINIMUM)


@pytest.fixture(scope="module")
def lab(local_api: Any, server_cert: tuple[Path, Path]) -> Iterator[MailLab]:
    # local_api: this process's mail settings (loopback, high ports, the test CA) are the
    # API's, read once per process; the checks run here under them.
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    small, large = Mailbox("few@example.com", 10), Mailbox("many@example.com", 50_000)
    with MailLab(*server_cert, small, large) as running:
        yield running


@pytest.fixture(scope="module")
def latency(lab: MailLab) -> LatencyReport:
    return lab.measure(runs=1, direct_runs=1)


@pytest.fixture(scope="module")
def mail(lab: MailLab) -> MailLatency:
    # The median of three: one run on a busy 2-core machine can be 10% off either way.
    return lab.measure_mail(runs=3)


def test_the_two_checks_run_concurrently(latency: LatencyReport) -> None:
    slower = max(latency.imap.seconds, latency.smtp.seconds)
    assert latency.concurrency_ratio <= CONCURRENCY_BUDGET, (latency.both, slower)


def test_a_large_mailbox_tests_as_fast_as_a_small_one(latency: LatencyReport) -> None:
    assert latency.mailbox_size_ratio <= MAILBOX_SIZE_BUDGET, (latency.both_large, latency.both)


def test_each_check_costs_its_protocols_minimum_round_trips(latency: LatencyReport) -> None:
    assert latency.imap.round_trips == IMAP_ROUND_TRIPS
    assert latency.smtp.round_trips == SMTP_ROUND_TRIPS
    # Each round trip costs a delay each way: the counts and the times agree.
    for check in (latency.imap, latency.smtp):
        assert check.seconds >= 2 * ONE_WAY_DELAY * check.round_trips


def test_a_page_costs_the_same_round_trips_in_a_large_mailbox(mail: MailLatency) -> None:
    assert mail.list_large.round_trips == mail.list_small.round_trips
    assert mail.list_large.seconds <= MAILBOX_SIZE_BUDGET * mail.list_small.seconds


def test_an_unread_page_costs_the_same_in_a_large_mailbox(mail: MailLatency) -> None:
    assert mail.unread_large.round_trips == mail.unread_small.round_trips
    # Two more than the page of the newest: the unread messages' count, then the page's UIDs.
    assert mail.unread_large.round_trips == mail.list_large.round_trips + 2
    # Every message of the lab is unread: a SEARCH answering every unread UID would answer
    # 50,000 of them (some 290 KB) besides the page.
    assert mail.unread_bytes_ratio <= UNREAD_BYTES_BUDGET, (
        mail.unread_large.server_bytes,
        mail.list_large.server_bytes,
    )


def test_a_send_costs_the_smtp_minimum_and_one_append(mail: MailLatency) -> None:
    assert mail.send.round_trips == len(SMTP_SEND_MINIMUM)
    assert mail.send_ratio <= SEND_BUDGET, (mail.send.seconds, mail.send_floor)


def test_a_look_for_new_mail_at_an_unchanged_inbox_costs_the_checks_round_trips(
    mail: MailLatency,
) -> None:
    """The new-mail worker's poll (issue 12): login and one STATUS, whatever the size."""
    assert mail.look_small.round_trips == mail.look_large.round_trips == IMAP_ROUND_TRIPS
