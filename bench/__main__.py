"""`make bench`: one table of cold starts and first requests as Lambda pays them, the Python
runtimes compared, the layer's size, and the latency of the connection test and of the mail
routes.

Exits 1 when a budget fails, after printing everything.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from mailbridge.core.settings import settings
from mailbridge_tools.build import find_python
from mailbridge_tools.localapi import LocalApi
from mailbridge_tools.localapi.seed import seed_demo_agent
from mailbridge_tools.sandbox import CertificateAuthority, Sandbox
from mailbridge_tools.template import (
    TEMPLATE_PATH,
    function_environment,
    load_template,
    table_logical_id,
)

from .deployed import Deployment, build_deployment, build_layer
from .imports import (
    CONNECTION_TEST_ROUTE,
    FRAMEWORK_FLOOR,
    GET_CONFIG_ROUTE,
    Group,
    ImportResult,
    ImportTarget,
    function_serving,
    import_targets,
    measure_imports,
    task_sources,
)
from .latency import ONE_WAY_DELAY, LatencyReport, Mailbox, MailLab, MailLatency
from .layer import LayerSpec, measure_layer
from .report import (
    first_request_rows,
    import_rows,
    latency_rows,
    layer_rows,
    machine,
    mail_rows,
    markdown_table,
    runtime_rows,
)

SMALL_MAILBOX = Mailbox("small@example.com", 10)
LARGE_MAILBOX = Mailbox("large@example.com", 50_000)
DIRECT_RUNS = 21  # checks without the proxy take milliseconds: more runs, steadier median
# The Python runtimes Lambda offers that can run this stack (November 2026); each one whose
# interpreter is here is compared with the template's.
RUNTIMES = ("python3.12", "python3.13", "python3.14")
# What the functions' boto3 clients sign with: moto takes any key.
AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mailbridge_bench", description=__doc__)
    parser.add_argument(
        "--runs",
        type=int,
        default=18,
        help="imports per row, each at its depth (the fastest counts)",
    )
    parser.add_argument("--latency-runs", type=int, default=3, help="checks per row (median)")
    options = parser.parse_args()
    started = time.monotonic()
    template = load_template()

    spec = LayerSpec.from_template(template, TEMPLATE_PATH.parent)
    build_root = TEMPLATE_PATH.parent / "build"
    _progress("cold starts: the layer and the functions built and laid out as on Lambda")
    cold, by_runtime, missing, versions = _measure_cold_starts(
        template, spec, build_root, options.runs
    )
    rows = import_rows(cold, options.runs, spec.runtime)
    rows += first_request_rows(cold, options.runs)
    rows += runtime_rows(by_runtime, spec.runtime, missing, versions)

    # Built with the cold starts' deployments, for Lambda's architecture.
    layer = measure_layer(_lambda_layer(build_root, spec.runtime, spec.machine) / "python", spec)
    rows += layer_rows(layer)

    _progress(f"connection test: filling a {LARGE_MAILBOX.messages:,}-message mailbox, then checks")
    latency, mail = _measure_latency(template, options.latency_runs)
    rows += latency_rows(latency, options.latency_runs, DIRECT_RUNS, ONE_WAY_DELAY)
    small, large = SMALL_MAILBOX.messages, LARGE_MAILBOX.messages
    rows += mail_rows(mail, small, large, options.latency_runs, ONE_WAY_DELAY)

    print(f"Machine: {machine()}\n")
    print(
        f"Lambda target: {spec.runtime} on {spec.machine}. The cold starts run the runtime's"
        " own Python on this machine's CPU, the layer built for it by the same Makefile.\n"
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


def _measure_cold_starts(
    template: dict[str, object], spec: LayerSpec, build_root: Path, runs: int
) -> tuple[list[ImportResult], dict[str, list[ImportResult]], list[str], dict[str, str]]:
    """Every row on the template's runtime, with and without the layer's bytecode; the floor
    and the GET config function on every other runtime found here (and those not found),
    in the same rounds, with each interpreter's patch release. The first requests reach
    moto's server, each as seeded for `make invoke`."""
    with LocalApi(seed=seed_demo_agent) as api:
        # The local run's stack: its table, and its name, which tags the secrets it
        # creates (`LocalApi.reseed` finds them by it).
        parameters = {table_logical_id(template): api.table_name, "AWS::StackName": api.table_name}
        aws = {"AWS_ENDPOINT_URL": api.aws_endpoint_url, **AWS_CREDENTIALS}
        targets = import_targets(template, parameters, api.function_of)
        compared = [
            target
            for target in targets
            if target.label == FRAMEWORK_FLOOR
            or (target.handler and target.handler.function == _get_config(template))
        ]
        deployments: dict[str, Deployment] = {}
        missing = []
        for runtime in dict.fromkeys((spec.runtime, *RUNTIMES)):
            python = find_python(runtime)
            if python is None:
                if runtime == spec.runtime:
                    raise SystemExit(f"mailbridge: {runtime}, the template's runtime, is not here")
                missing.append(runtime)
                continue
            _progress(f"building for {runtime} ({python})")
            root = build_root / f"deployed-{runtime}"
            deployments[runtime] = build_deployment(runtime, python, task_sources(targets), root)
            # As sam build builds it, for Lambda's architecture: the template's runtime's is
            # the layer measured for size, and a runtime is a candidate only if every
            # dependency has wheels for it (the Makefile fails here otherwise).
            build_layer(python, _lambda_layer(build_root, runtime, spec.machine), spec.machine)
        groups = [Group(deployments[spec.runtime], targets, without_bytecode=True)]
        groups += [
            Group(deployment, compared)
            for runtime, deployment in deployments.items()
            if runtime != spec.runtime
        ]
        _progress(f"{runs} rounds of fresh interpreters")
        results = measure_imports(groups, runs, aws, api.reseed)
    by_runtime = {spec.runtime: _only(results[0], compared)}
    by_runtime.update(
        (group.deployment.runtime, measured)
        for group, measured in zip(groups[1:], results[1:], strict=True)
    )
    versions = {runtime: deployment.version for runtime, deployment in deployments.items()}
    return results[0], by_runtime, missing, versions


def _lambda_layer(build_root: Path, runtime: str, machine: str) -> Path:
    """Where the layer built for Lambda's architecture with `runtime` lies."""
    return build_root / f"deployed-{runtime}" / f"layer-{machine}"


def _get_config(template: dict[str, object]) -> str:
    return function_serving(template, GET_CONFIG_ROUTE)


def _only(results: list[ImportResult], targets: list[ImportTarget]) -> list[ImportResult]:
    return [result for result in results if result.target in targets]


def _measure_latency(template: dict[str, object], runs: int) -> tuple[LatencyReport, MailLatency]:
    """The checks and the mail routes' work run in this process, with the connection-test
    function's settings from the template, as a deployment allowing the lab's loopback
    servers would have them."""
    function = function_serving(template, CONNECTION_TEST_ROUTE)
    with tempfile.TemporaryDirectory(prefix="mailbridge-bench-") as directory:
        ca = CertificateAuthority.create(Path(directory))
        cert, key = ca.issue(["localhost"])
        resolved = {
            table_logical_id(template): "mailbridge-bench",
            "AWS::StackName": "mailbridge-bench",
            **Sandbox.parameters(),
        }
        os.environ.update(function_environment(template, function, resolved))
        os.environ["MAIL_EXTRA_CA_FILE"] = str(ca.ca_path)
        # The layer reads its settings once per process: the cold starts' local run (its
        # seeding) read them first, and these are the lab's.
        settings.cache_clear()
        with MailLab(cert, key, SMALL_MAILBOX, LARGE_MAILBOX) as lab:
            return lab.measure(runs, DIRECT_RUNS), lab.measure_mail(runs)


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
