"""`make bench`: one table of cold starts, the layer's size, and the latency of the connection
test and of the mail routes.

Exits 1 when a budget fails, after printing everything.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from mailbridge_tools.sandbox import CertificateAuthority, Sandbox
from mailbridge_tools.template import (
    TEMPLATE_PATH,
    function_environment,
    load_template,
    table_logical_id,
)

from .imports import CONNECTION_TEST_ROUTE, function_serving, import_targets, measure_imports
from .latency import ONE_WAY_DELAY, LatencyReport, Mailbox, MailLab, MailLatency
from .layer import LayerSpec, build_layer, measure_layer
from .report import import_rows, latency_rows, layer_rows, machine, mail_rows, markdown_table

SMALL_MAILBOX = Mailbox("small@example.com", 10)
LARGE_MAILBOX = Mailbox("large@example.com", 50_000)
DIRECT_RUNS = 21  # checks without the proxy take milliseconds: more runs, steadier median


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mailbridge_bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="imports per row (median)")
    parser.add_argument("--latency-runs", type=int, default=3, help="checks per row (median)")
    options = parser.parse_args()
    started = time.monotonic()
    template = load_template()

    _progress(f"cold starts: {options.runs} rounds of fresh interpreters")
    rows = import_rows(measure_imports(import_targets(template), options.runs), options.runs)

    _progress("layer: building it as sam build would (cached under build/)")
    spec = LayerSpec.from_template(template, TEMPLATE_PATH.parent)
    layer = measure_layer(build_layer(spec, TEMPLATE_PATH.parent / "build"), spec)
    rows += layer_rows(layer)

    _progress(f"connection test: filling a {LARGE_MAILBOX.messages:,}-message mailbox, then checks")
    latency, mail = _measure_latency(template, options.latency_runs)
    rows += latency_rows(latency, options.latency_runs, DIRECT_RUNS, ONE_WAY_DELAY)
    small, large = SMALL_MAILBOX.messages, LARGE_MAILBOX.messages
    rows += mail_rows(mail, small, large, options.latency_runs, ONE_WAY_DELAY)

    print(f"Machine: {machine()}\n")
    print(
        f"Lambda target: Python {spec.python_version} on {spec.machine}, which the layer is"
        " built for; the imports run on this machine's Python.\n"
    )
    print(markdown_table(rows))
    failed = [row.measure for row in rows if row.verdict == "FAIL"]
    budgets = sum(1 for row in rows if row.verdict)
    print(
        f"\n{budgets - len(failed)} of {budgets} budgets hold ({time.monotonic() - started:.0f} s)."
    )
    for name, requirers in layer.runtime_provided.items():
        print(
            f"ERROR: the layer packages {name} (required by {', '.join(requirers)}), which the "
            "Lambda runtime provides",
            file=sys.stderr,
        )
    if failed:
        print("Over budget: " + "; ".join(failed), file=sys.stderr)
        sys.exit(1)


def _measure_latency(template: dict[str, object], runs: int) -> tuple[LatencyReport, MailLatency]:
    """The checks and the mail routes' work run in this process, with the connection-test
    function's settings from the template, as a deployment allowing the lab's loopback
    servers would have them."""
    function = function_serving(template, CONNECTION_TEST_ROUTE)
    with tempfile.TemporaryDirectory(prefix="mailbridge-bench-") as directory:
        ca = CertificateAuthority.create(Path(directory))
        cert, key = ca.issue(["localhost"])
        resolved = {table_logical_id(template): "mailbridge-bench", **Sandbox.parameters()}
        os.environ.update(function_environment(template, function, resolved))
        os.environ["MAIL_EXTRA_CA_FILE"] = str(ca.ca_path)
        with MailLab(cert, key, SMALL_MAILBOX, LARGE_MAILBOX) as lab:
            return lab.measure(runs, DIRECT_RUNS), lab.measure_mail(runs)


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
