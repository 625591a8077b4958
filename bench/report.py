"""The benchmark's one table, in Markdown so BENCHMARKS.md can hold it as printed, and the
machine it ran on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .imports import BOTO3_FLOOR, FRAMEWORK_FLOOR, ImportResult
from .latency import (
    CONCURRENCY_BUDGET,
    LIST_LIMIT,
    MAILBOX_SIZE_BUDGET,
    SEND_BUDGET,
    UNREAD_BYTES_BUDGET,
    LatencyReport,
    MailLatency,
)
from .layer import LAYER_BUDGET_MB, MB, LayerReport


@dataclass(frozen=True)
class Row:
    measure: str
    value: str = ""
    compared: str = ""
    budget: str = ""
    verdict: str = ""  # "pass", "FAIL", or empty for a row without a budget
    note: str = ""


def verdict(holds: bool) -> str:
    return "pass" if holds else "FAIL"


def import_rows(results: list[ImportResult], runs: int) -> list[Row]:
    by_label = {result.target.label: result for result in results}
    boto3 = by_label[BOTO3_FLOOR].seconds
    framework = by_label[FRAMEWORK_FLOOR].seconds
    rows = [Row(f"**Cold start**: import in a fresh interpreter, median of {runs}")]
    for result in results:
        ratio = result.seconds / boto3
        budget = result.target.budget
        rows.append(
            Row(
                measure=result.target.label,
                value=f"{result.seconds * 1000:.0f} ms, {result.peak_rss / MB:.1f} MB RSS",
                compared=f"{ratio:.2f}x boto3",
                budget=f"≤ {budget}x" if budget else "",
                verdict=verdict(ratio <= budget) if budget else "",
                note=f"{result.seconds / framework:.2f}x the framework floor"
                if result.target.handler
                else "",
            )
        )
    return rows


def layer_rows(layer: LayerReport) -> list[Row]:
    largest = ", ".join(f"{name} {size / MB:.1f}" for name, size in layer.largest[:3])
    packaged = layer.runtime_provided
    size_notes = [f"largest (MB): {largest}"]
    if packaged:
        without = layer.size_without_runtime_provided / MB
        names = ", ".join(packaged)
        only = "it needs" if len(packaged) == 1 else "they need"
        size_notes.insert(0, f"{without:.1f} MB without {names} and what only {only}")
    return [
        Row("**Layer**: as `sam build` makes it for the template's runtime, unzipped"),
        Row(
            measure="layer size",
            value=f"{layer.size_mb:.1f} MB",
            budget=f"≤ {LAYER_BUDGET_MB} MB",
            verdict=verdict(layer.size_mb <= LAYER_BUDGET_MB),
            note="; ".join(size_notes),
        ),
        Row(
            measure="packages the Lambda runtime provides (boto3, botocore, s3transfer)",
            value=", ".join(packaged) or "none",
            budget="none",
            verdict=verdict(not packaged),
            note="; ".join(
                f"{name} required by {', '.join(requirers)}" for name, requirers in packaged.items()
            ),
        ),
    ]


def latency_rows(latency: LatencyReport, runs: int, direct_runs: int, delay: float) -> list[Row]:
    small, large = latency.small.messages, latency.large.messages

    def check(label: str, seconds: float, round_trips: int, minimum: tuple[str, ...]) -> Row:
        return Row(
            measure=label,
            value=f"{seconds * 1000:.0f} ms",
            compared=f"{round_trips} round trips, minimum {len(minimum)}",
            note="minimum: " + ", ".join(minimum),
        )

    return [
        Row(
            f"**Connection test**: through proxies adding {delay * 1000:.0f} ms each way,"
            f" median of {runs}"
        ),
        check(
            f"IMAP check alone (implicit TLS, {small:,} messages)",
            latency.imap.seconds,
            latency.imap.round_trips,
            latency.imap.minimum,
        ),
        check(
            "SMTP check alone (STARTTLS)",
            latency.smtp.seconds,
            latency.smtp.round_trips,
            latency.smtp.minimum,
        ),
        Row(
            measure=f"connection test, both checks ({small:,} messages)",
            value=f"{latency.both * 1000:.0f} ms",
            compared=f"{latency.concurrency_ratio:.2f}x the slower check",
            budget=f"≤ {CONCURRENCY_BUDGET}x",
            verdict=verdict(latency.concurrency_ratio <= CONCURRENCY_BUDGET),
        ),
        Row(
            measure=f"connection test, both checks ({large:,} messages)",
            value=f"{latency.both_large * 1000:.0f} ms",
            compared=f"{latency.mailbox_size_ratio:.2f}x {small:,} messages",
            budget=f"≤ {MAILBOX_SIZE_BUDGET}x",
            verdict=verdict(latency.mailbox_size_ratio <= MAILBOX_SIZE_BUDGET),
        ),
        Row(
            measure=f"IMAP check without the proxy, {large:,} vs {small:,} messages",
            value=f"{latency.direct_imap_large * 1000:.1f} vs {latency.direct_imap * 1000:.1f} ms",
            compared=f"{latency.direct_mailbox_size_ratio:.2f}x",
            note=f"median of {direct_runs}: the server's cost, which latency would hide",
        ),
    ]


def mail_rows(mail: MailLatency, small: int, large: int, runs: int, delay: float) -> list[Row]:
    same = mail.list_large.round_trips == mail.list_small.round_trips
    unread_same = mail.unread_large.round_trips == mail.unread_small.round_trips
    unread_bytes = mail.unread_bytes_ratio
    return [
        Row(f"**Mail routes** (IMAP/SMTP): through the same proxies, median of {runs}"),
        Row(
            measure=f"list the newest {LIST_LIMIT}, {large:,} vs {small:,} messages",
            value=f"{_ms(mail.list_large.seconds)} vs {_ms(mail.list_small.seconds)} ms",
            compared=f"{mail.list_large.round_trips} vs {mail.list_small.round_trips} round trips",
            budget="the same round trips",
            verdict=verdict(same),
            note="a page is fetched by position from the folder's end: no whole-mailbox "
            "SEARCH or FETCH",
        ),
        Row(
            measure=f"list the newest {LIST_LIMIT} unread, {large:,} vs {small:,} messages, "
            "all unread",
            value=f"{_ms(mail.unread_large.seconds)} vs {_ms(mail.unread_small.seconds)} ms",
            compared=f"{mail.unread_large.round_trips} vs {mail.unread_small.round_trips} round "
            f"trips; {mail.unread_large.server_bytes / 1024:.1f} KiB answered, "
            f"{unread_bytes:.2f}x the newest {LIST_LIMIT}'s",
            budget=f"the same round trips; ≤ {UNREAD_BYTES_BUDGET}x the bytes",
            verdict=verdict(unread_same and unread_bytes <= UNREAD_BYTES_BUDGET),
            note="their count, then the page's UIDs by position (SEARCH RETURN COUNT, then "
            "PARTIAL): no SEARCH answering every unread UID",
        ),
        Row(
            measure="send one message, its copy appended to the Sent folder",
            value=f"{mail.send.seconds * 1000:.0f} ms",
            compared=f"{mail.send_ratio:.2f}x the SMTP minimum and one APPEND "
            f"({mail.send_floor * 1000:.0f} ms)",
            budget=f"≤ {SEND_BUDGET}x",
            verdict=verdict(mail.send_ratio <= SEND_BUDGET),
            note=f"SMTP {mail.send.round_trips} round trips (minimum {len(mail.send.minimum)}); "
            f"IMAP {mail.send_imap_round_trips}, its login while SMTP sends",
        ),
        Row(
            measure=f"new mail: a look at an unchanged inbox, {large:,} vs {small:,} messages",
            value=f"{_ms(mail.look_large.seconds)} vs {_ms(mail.look_small.seconds)} ms",
            compared=f"{mail.look_large.round_trips} vs {mail.look_small.round_trips} round trips"
            f", minimum {len(mail.look_small.minimum)}",
            budget="the same in both; the minimum and imaplib's CAPABILITY",
            verdict=verdict(
                mail.look_large.round_trips
                == mail.look_small.round_trips
                <= len(mail.look_small.minimum) + 1
            ),
            note="minimum: " + ", ".join(mail.look_small.minimum) + " (UIDNEXT UIDVALIDITY); "
            "and no DynamoDB write (tests/test_new_mail.py)",
        ),
    ]


def markdown_table(rows: list[Row]) -> str:
    header = Row("Measure", "Value", "Compared", "Budget", "Verdict", "Notes")
    lines = [_cells(header), "|" + "---|" * 6]
    lines += [_cells(row) for row in rows]
    return "\n".join(lines)


def _cells(row: Row) -> str:
    cells = (row.measure, row.value, row.compared, row.budget, row.verdict, row.note)
    return "| " + " | ".join(cells) + " |"


def machine() -> str:
    """CPU model, cores, Python, OS and load: what the numbers depend on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    try:
        system = platform.freedesktop_os_release()["PRETTY_NAME"]
    except OSError:
        system = platform.platform()
    return (
        f"{cpu} ({platform.machine()}), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {system}; "
        # The machine may be shared: a busy one inflates the times.
        f"1-minute load average at the end {os.getloadavg()[0]:.2f}"
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"
