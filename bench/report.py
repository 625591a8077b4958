"""The benchmark's one table, in Markdown so BENCHMARKS.md can hold it as printed, and the
machine it ran on."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .imports import (
    BOTO3_FLOOR,
    BYTECODE_BUDGET,
    FIRST_REQUEST_BUDGET,
    FRAMEWORK_FLOOR,
    GET_CONFIG_ROUTE,
    ImportResult,
)
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


def _thousandths(ratio: float) -> int:
    """A ratio in thousandths, rounded up (float noise aside): what is printed and judged."""
    return math.ceil(round(ratio * 1000, 6))


def _rounded_up(ratio: float) -> str:
    """Three decimals, rounded up: 1.1004 prints 1.101."""
    return f"{_thousandths(ratio) / 1000:.3f}"


def within(ratio: float, budget: float) -> bool:
    """Judged on the printed value: a ratio printed at its budget holds it, one printed above
    fails it."""
    return _thousandths(ratio) <= round(budget * 1000)


def import_rows(results: list[ImportResult], runs: int, runtime: str) -> list[Row]:
    by_label = {result.target.label: result for result in results}
    boto3 = by_label[BOTO3_FLOOR].seconds
    floor = by_label[FRAMEWORK_FLOOR]
    rows = [
        Row(
            f"**Cold start** on {runtime}, the code laid out as on Lambda: import in a fresh"
            f" interpreter, bytecode writing off, fastest of {runs}"
        )
    ]
    for result in results:
        ratio = result.seconds / floor.seconds
        budget = result.target.budget
        without = result.seconds_without_bytecode
        notes = [f"{result.seconds / boto3:.2f}x boto3"] if result.target.handler else []
        if without is not None:
            notes.append(f"without the layer's bytecode {_ms(without)} ms")
        rows.append(
            Row(
                measure=result.target.label,
                value=f"{_ms(result.seconds)} ms, {result.peak_rss / MB:.1f} MB RSS",
                compared=f"{_rounded_up(ratio)}x the floor",
                budget=f"≤ {budget}x" if budget else "",
                verdict=verdict(within(ratio, budget)) if budget else "",
                note="; ".join(notes),
            )
        )
    handlers = [result for result in results if result.target.budget]
    compiled = sum(result.seconds for result in handlers)
    uncompiled = sum(result.seconds_without_bytecode or 0.0 for result in handlers)
    rows.append(
        Row(
            measure="the layer's bytecode: every handler's import, summed",
            value=f"{_ms(compiled)} vs {_ms(uncompiled)} ms",
            compared=f"{compiled / uncompiled:.2f}x without it",
            budget=f"≤ {BYTECODE_BUDGET}x",
            verdict=verdict(compiled <= BYTECODE_BUDGET * uncompiled),
            note="the same sources, without their .pyc: Lambda compiles them at every cold "
            "start, as it cannot write __pycache__",
        )
    )
    return rows


# What a 4xx first request did: the demo agent is not connected and the sample events carry
# no provider's token (no mail server, no provider here), so the function refused it after
# its own checks and lookups.
REFUSED = (
    "refused after the function's own checks (the demo agent is not connected, a push's "
    "token is not the provider's), before any mail server"
)


def _first_request_note(result: ImportResult) -> str:
    """What sent the request, and what the function answered: an HTTP status, or what a
    function the Scheduler or SQS invokes returned."""
    source = result.target.event_source
    if result.status is None:
        return f"{source}: returned {json.dumps(result.answer)}"
    return f"{source}: {result.status}" + ("" if result.status < 400 else f" ({REFUSED})")


def first_request_rows(results: list[ImportResult], runs: int) -> list[Row]:
    floor = next(result for result in results if result.target.label == FRAMEWORK_FLOOR)
    floor_seconds = floor.first_request
    if not floor_seconds:
        raise RuntimeError("the framework floor's first request was not measured")
    rows = [
        Row(
            "**First request**: the import, then one request handled against moto's AWS on"
            f" loopback (the demo agents of `make invoke`), fastest of {runs}"
        )
    ]
    for result in results:
        seconds, event = result.first_request, result.target.event
        if seconds is None or event is None:
            continue
        is_floor = result is floor
        ratio = seconds / floor_seconds
        rows.append(
            Row(
                measure="framework floor: one DynamoDB GetItem" if is_floor else _function(result),
                value=f"{_ms(seconds)} ms",
                compared=f"{_rounded_up(ratio)}x the floor's",
                budget="" if is_floor else f"≤ {FIRST_REQUEST_BUDGET}x",
                verdict="" if is_floor else verdict(within(ratio, FIRST_REQUEST_BUDGET)),
                note=_first_request_note(result),
            )
        )
    return rows


def runtime_rows(
    by_runtime: dict[str, list[ImportResult]],
    chosen: str,
    missing: list[str],
    versions: dict[str, str],
) -> list[Row]:
    """The floor and the GET config function on each runtime, against the template's, with
    the patch release of the interpreter that ran them (`versions`, by runtime)."""
    rows = [Row("**Runtimes**: the same rows on each Python runtime Lambda offers")]
    reference = {result.target.label: result for result in by_runtime[chosen]}
    for runtime, results in by_runtime.items():
        for result in results:
            base = reference[result.target.label]
            # Both rows have a sample event: the probe fails unless it was answered.
            first, base_first = result.first_request, base.first_request
            assert first is not None and base_first is not None
            rows.append(
                Row(
                    measure=f"{runtime}: {_short(result)}",
                    value=f"{_ms(result.seconds)} ms import, {_ms(first)} ms first request",
                    compared=f"{result.seconds / base.seconds:.2f}x, "
                    f"{first / base_first:.2f}x {chosen}'s",
                    note=("the template's runtime; " if runtime == chosen else "")
                    + f"Python {versions[runtime]}",
                )
            )
    for runtime in missing:
        rows.append(Row(f"{runtime}: not measured", note="no interpreter of it on this machine"))
    return rows


def _short(result: ImportResult) -> str:
    if result.target.label == FRAMEWORK_FLOOR:
        return "framework floor"
    return f"{_function(result)} ({GET_CONFIG_ROUTE})"


def _function(result: ImportResult) -> str:
    return result.target.handler.function if result.target.handler else result.target.label


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
        Row("**Layer**: as `sam build` makes it (its Makefile, with bytecode), unzipped"),
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
            budget="the minimum",
            verdict=verdict(round_trips == len(minimum)),
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
            budget="the same in both; the minimum",
            verdict=verdict(
                mail.look_large.round_trips
                == mail.look_small.round_trips
                == len(mail.look_small.minimum)
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
