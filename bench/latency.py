"""Connection-test latency over a slow network: the IMAP and SMTP checks through latency
proxies, alone and together, and a small mailbox against a large one.

The checks are the service's own (`mailbridge.connections.checks.check_mail_servers`, and
each check alone through the `mail_servers` port), so the process's mail settings must let
them reach loopback, high ports and the servers' CA: MAIL_ALLOW_PRIVATE_NETWORKS,
MAIL_EXTRA_PORTS, MAIL_EXTRA_CA_FILE.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from mailbridge.connections.checks import check_mail_servers
from mailbridge.connections.mail_servers import mail_servers
from mailbridge.connections.records import ImapConnection, Security, ServerSettings
from mailbridge.core.settings import settings
from mailbridge.mail.compose import compose
from mailbridge.mail.mailboxes import open_mailbox
from mailbridge.newmail.service import LOOK_LIMIT
from mailbridge_tools.sandbox import DovecotServer, SmtpServer

from .latency_proxy import LatencyProxy

ONE_WAY_DELAY = 0.1  # seconds, each direction
# The budgets: both checks over the slower one alone, the large mailbox over the small.
CONCURRENCY_BUDGET = 1.2
MAILBOX_SIZE_BUDGET = 1.1
CHECK_TIMEOUT = 10.0
PASSWORD = "bench-app-password"  # noqa: S105 - the lab's own throwaway accounts

# What a client must wait for, in order, with TLS 1.3 and without pipelining; LOGOUT and QUIT
# are not in them: nothing needs their answer (BENCHMARKS.md has the reasoning).
IMAP_TLS_MINIMUM = ("TCP", "TLS 1.3", "greeting", "LOGIN", "STATUS")
SMTP_STARTTLS_MINIMUM = ("TCP", "greeting", "EHLO", "STARTTLS", "TLS 1.3", "EHLO", "AUTH")
# A message to one recipient: the same dialogue, then its envelope and itself.
SMTP_SEND_MINIMUM = (*SMTP_STARTTLS_MINIMUM, "MAIL", "RCPT", "DATA", "message")
# The mail routes' budgets: a page of the newest messages, or of the newest unread, costs
# the same round trips in a large mailbox as in a small one, and the unread page's answers
# about what the page of the newest does (every message unread: no SEARCH answering them
# all); a send, the SMTP minimum and one APPEND of latency, within 20% (TLS and the servers'
# work). SMTP's round trips are counted exactly; an IMAP login after SMTP rather than
# meanwhile would add at least 4 round trips, a third of the floor.
LIST_LIMIT = 50
UNREAD_BYTES_BUDGET = 1.1
SEND_BUDGET = 1.2


@dataclass(frozen=True)
class Mailbox:
    address: str
    messages: int


@dataclass(frozen=True)
class CheckTiming:
    seconds: float  # median
    round_trips: int  # the most any run needed
    minimum: tuple[str, ...]
    server_bytes: int  # the most any run's server answered


@dataclass(frozen=True)
class LatencyReport:
    imap: CheckTiming
    smtp: CheckTiming
    both: float  # check_mail_servers, both checks concurrently, small mailbox
    both_large: float  # the same on the large mailbox
    # Without the proxies: what the mailbox's size costs the server, not hidden by latency.
    direct_imap: float
    direct_imap_large: float
    small: Mailbox
    large: Mailbox

    @property
    def concurrency_ratio(self) -> float:
        """The whole test over its slower check: 1.0 when they overlap perfectly."""
        return self.both / max(self.imap.seconds, self.smtp.seconds)

    @property
    def mailbox_size_ratio(self) -> float:
        return self.both_large / self.both

    @property
    def direct_mailbox_size_ratio(self) -> float:
        return self.direct_imap_large / self.direct_imap


@dataclass(frozen=True)
class MailLatency:
    list_small: CheckTiming  # the newest LIST_LIMIT messages of the small mailbox
    list_large: CheckTiming  # ... and of the large one
    unread_small: CheckTiming  # the newest LIST_LIMIT unread (all are) of the small mailbox
    unread_large: CheckTiming  # ... and of the large one
    send: CheckTiming  # SMTP's round trips; the seconds of the whole send, sent copy included
    send_imap_round_trips: int  # IMAP's, beside SMTP: login and LIST meanwhile, then APPEND
    look_small: CheckTiming  # the new-mail worker's look at an unchanged inbox
    look_large: CheckTiming

    @property
    def unread_bytes_ratio(self) -> float:
        """What the large mailbox's unread page answered over its page of the newest: the
        same messages, since all are unread."""
        return self.unread_large.server_bytes / self.list_large.server_bytes

    @property
    def send_floor(self) -> float:
        """The latency a send cannot avoid: the SMTP minimum, then one APPEND."""
        return (len(SMTP_SEND_MINIMUM) + 1) * 2 * ONE_WAY_DELAY

    @property
    def send_ratio(self) -> float:
        return self.send.seconds / self.send_floor


@contextmanager
def _mail_timeout(seconds: float) -> Iterator[None]:
    """This process's settings, with MAIL_TIMEOUT_SECONDS at `seconds` meanwhile."""
    previous = os.environ.get("MAIL_TIMEOUT_SECONDS")
    os.environ["MAIL_TIMEOUT_SECONDS"] = str(seconds)
    settings.cache_clear()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MAIL_TIMEOUT_SECONDS"]
        else:
            os.environ["MAIL_TIMEOUT_SECONDS"] = previous
        settings.cache_clear()


class MailLab:
    """Dovecot (IMAPS) and aiosmtpd (STARTTLS) on loopback with `small` and `large`
    mailboxes, each server also behind a LatencyProxy. `cert` must be for "localhost" and
    chain to the CA in MAIL_EXTRA_CA_FILE."""

    def __init__(self, cert: Path, key: Path, small: Mailbox, large: Mailbox) -> None:
        self._cert, self._key = cert, key
        self.small, self.large = small, large
        self._stack = ExitStack()

    def __enter__(self) -> MailLab:
        users = {self.small.address: PASSWORD, self.large.address: PASSWORD}
        with ExitStack() as stack:
            dovecot = stack.enter_context(DovecotServer(self._cert, self._key, users))
            for mailbox in (self.small, self.large):
                # Every message unread: what a SEARCH answering every unread UID costs most.
                dovecot.add_messages(mailbox.address, mailbox.messages, unseen=mailbox.messages)
            smtp = stack.enter_context(SmtpServer(self._cert, self._key, users))
            self.imap_port, self.smtp_port = dovecot.imaps_port, smtp.starttls_port
            self.imap_proxy = stack.enter_context(LatencyProxy(self.imap_port, ONE_WAY_DELAY))
            self.smtp_proxy = stack.enter_context(LatencyProxy(self.smtp_port, ONE_WAY_DELAY))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def connection(self, mailbox: Mailbox, *, proxied: bool = True) -> ImapConnection:
        imap_port = self.imap_proxy.port if proxied else self.imap_port
        smtp_port = self.smtp_proxy.port if proxied else self.smtp_port
        return ImapConnection(
            preset="custom",
            email=mailbox.address,
            username=mailbox.address,
            imap=ServerSettings(host="localhost", port=imap_port, security=Security.TLS),
            smtp=ServerSettings(host="localhost", port=smtp_port, security=Security.STARTTLS),
        )

    def measure(self, runs: int, direct_runs: int) -> LatencyReport:
        """Medians of `runs` checks through the proxies and of `direct_runs` without."""

        def imap_check(mailbox: Mailbox, *, proxied: bool = True) -> Callable[[], None]:
            connection = self.connection(mailbox, proxied=proxied)

            def run() -> None:
                inbox = mail_servers().check_imap(connection, PASSWORD, CHECK_TIMEOUT)
                _expect(inbox.total == mailbox.messages, f"{mailbox}: {inbox}")

            return run

        def both_checks(mailbox: Mailbox) -> Callable[[], None]:
            connection = self.connection(mailbox)

            def run() -> None:
                result = check_mail_servers(connection, PASSWORD, CHECK_TIMEOUT)
                counted = result.inbox.total if result.inbox else None
                _expect(result.ok and counted == mailbox.messages, f"{mailbox}: {result}")

            return run

        smtp_connection = self.connection(self.small)
        return LatencyReport(
            imap=self._check_timing(
                imap_check(self.small), self.imap_proxy, runs, IMAP_TLS_MINIMUM
            ),
            smtp=self._check_timing(
                lambda: mail_servers().check_smtp(smtp_connection, PASSWORD, CHECK_TIMEOUT),
                self.smtp_proxy,
                runs,
                SMTP_STARTTLS_MINIMUM,
            ),
            both=_median_seconds(both_checks(self.small), runs),
            both_large=_median_seconds(both_checks(self.large), runs),
            direct_imap=_median_seconds(imap_check(self.small, proxied=False), direct_runs),
            direct_imap_large=_median_seconds(imap_check(self.large, proxied=False), direct_runs),
            small=self.small,
            large=self.large,
        )

    def measure_mail(self, runs: int) -> MailLatency:
        """The mail routes' IMAP and SMTP work, through the proxies: listing a page in each
        mailbox, of all messages and of the unread, and sending a message (its copy appended
        to the Sent folder)."""

        def listing(mailbox: Mailbox, *, unread_only: bool = False) -> Callable[[], None]:
            connection = self.connection(mailbox)

            def run() -> None:
                with open_mailbox(connection, PASSWORD) as box:
                    page = box.list_messages(
                        "inbox", unread_only=unread_only, cursor=None, limit=LIST_LIMIT
                    )
                listed = len(page.messages)
                _expect(listed == min(LIST_LIMIT, mailbox.messages), f"{mailbox}: {listed}")

            return run

        def look(mailbox: Mailbox) -> Callable[[], None]:
            """The new-mail worker's look at an inbox with nothing new since the last."""
            connection = self.connection(mailbox)
            since = datetime.now(UTC)
            with open_mailbox(connection, PASSWORD) as box:
                position = box.new_messages(None, since=since, limit=LOOK_LIMIT).position

            def run() -> None:
                with open_mailbox(connection, PASSWORD) as box:
                    found = box.new_messages(position, since=since, limit=LOOK_LIMIT)
                _expect(not found.messages and found.position == position, f"{mailbox} changed")

            return run

        connection = self.connection(self.small)

        def send() -> None:
            outgoing = compose(
                sender=self.small.address,
                sender_name="Bench",
                to=["someone@example.org"],
                cc=[],
                bcc=[],
                subject="Latency",
                text="One message.",
                html=None,
                attachments=[],
                replying_to=None,
                now=datetime.now(UTC),
                message_key=str(time.monotonic_ns()),
            )
            with open_mailbox(connection, PASSWORD) as box:
                sent = box.send(outgoing, replying_to=None)
            _expect(sent.id is not None, "no copy in the Sent folder")

        # A send through the proxies takes longer than a test suite's short mail timeout:
        # the mail routes run here with the checks' (a deployment's default).
        with _mail_timeout(CHECK_TIMEOUT):
            list_small = self._check_timing(listing(self.small), self.imap_proxy, runs, ())
            list_large = self._check_timing(listing(self.large), self.imap_proxy, runs, ())
            unread_small = self._check_timing(
                listing(self.small, unread_only=True), self.imap_proxy, runs, ()
            )
            unread_large = self._check_timing(
                listing(self.large, unread_only=True), self.imap_proxy, runs, ()
            )
            look_small = self._check_timing(
                look(self.small), self.imap_proxy, runs, IMAP_TLS_MINIMUM
            )
            look_large = self._check_timing(
                look(self.large), self.imap_proxy, runs, IMAP_TLS_MINIMUM
            )
            sending = self._check_timing(send, self.smtp_proxy, runs, SMTP_SEND_MINIMUM)
        imap_traces = self.imap_proxy.take_traces()
        _expect(len(imap_traces) == runs, f"{len(imap_traces)} IMAP connections for {runs} sends")
        return MailLatency(
            list_small,
            list_large,
            unread_small,
            unread_large,
            sending,
            max(trace.round_trips for trace in imap_traces),
            look_small,
            look_large,
        )

    @staticmethod
    def _check_timing(
        check: Callable[[], object], proxy: LatencyProxy, runs: int, minimum: tuple[str, ...]
    ) -> CheckTiming:
        proxy.take_traces()
        seconds = _median_seconds(check, runs)
        traces = proxy.take_traces()
        # One connection per run: a check that opened more would show here.
        _expect(len(traces) == runs, f"{len(traces)} connections for {runs} checks")
        return CheckTiming(
            seconds,
            max(trace.round_trips for trace in traces),
            minimum,
            max(trace.server_bytes for trace in traces),
        )


def _median_seconds(action: Callable[[], object], runs: int) -> float:
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def _expect(condition: bool, failure: str) -> None:
    """A measurement of a failed check would be meaningless: stop instead."""
    if not condition:
        raise RuntimeError(f"connection check went wrong: {failure}")
