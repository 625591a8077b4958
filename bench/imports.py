"""Cold-start imports: each handler module loaded as Lambda loads it, in a fresh interpreter
with the environment Lambda gives its function, next to reference imports.

The functions, their handlers and their environment come from template.yaml, so a function,
a handler or a variable (tracing turned off, say) that changes there changes here.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailbridge_tools.template import (
    TEMPLATE_PATH,
    function_environment,
    function_properties,
    routes,
    table_logical_id,
)

REGION = "us-east-1"
BOTO3_FLOOR = "import boto3"
FRAMEWORK_FLOOR = "framework floor: boto3, resolver, pydantic, Logger, Metrics"
# The budgets, as multiples of the boto3 floor: every handler, and the handler that
# serves this route (the Email tab's first call, so its cold start is the one users wait on).
HANDLER_BUDGET = 1.5
GET_CONFIG_BUDGET = 1.3
GET_CONFIG_ROUTE = "GET /bridge/agents/{agentId}/email-config"
CONNECTION_TEST_ROUTE = "POST /bridge/agents/{agentId}/email-config/test"


@dataclass(frozen=True)
class Handler:
    """A function's handler, as the template names it."""

    function: str  # the logical id
    code_uri: Path
    name: str  # "app.handler"

    def arguments(self) -> list[str]:
        return [self.function, str(self.code_uri), self.name]


@dataclass(frozen=True)
class ImportTarget:
    """One row: a module to import, or a function's handler to load."""

    label: str
    environment: dict[str, str]
    module: str | None = None
    handler: Handler | None = None
    budget: float | None = None  # the most it may cost, in multiples of the boto3 floor

    @property
    def probe_arguments(self) -> list[str]:
        """For `python -m mailbridge_bench.probe`."""
        if self.handler:
            return ["handler", *self.handler.arguments()]
        return ["module", str(self.module)]


@dataclass(frozen=True)
class ProbeResult:
    seconds: float
    peak_rss: int  # bytes


@dataclass(frozen=True)
class ImportResult:
    target: ImportTarget
    seconds: float  # median over the runs
    peak_rss: int  # median, bytes


def _stand_ins(template: dict[str, Any]) -> dict[str, str]:
    """Values of the shape CloudFormation gives the stack's queues and buses (nothing is
    sent to them at import)."""
    values = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") == "AWS::SQS::Queue":
            values[logical_id] = f"https://sqs.{REGION}.amazonaws.com/123456789012/{logical_id}"
        elif resource.get("Type") == "AWS::Events::EventBus":
            values[logical_id] = f"mailbridge-bench-{logical_id}"
    return values


def lambda_environment(
    template: dict[str, Any], function: str, parameters: dict[str, str] | None = None
) -> dict[str, str]:
    """What a process of `function` starts with on Lambda: the runtime's own variables, then
    the function's Environment from the template, with `parameters` as `sam deploy
    --parameter-overrides` would give them (defaults otherwise)."""
    properties = function_properties(template, function)
    runtime = properties.get("Runtime", "python3.12")
    resolved = {
        table_logical_id(template): "mailbridge-bench",
        "AWS::StackName": "mailbridge-bench",
        **_stand_ins(template),
        **(parameters or {}),
    }
    return {
        # Nothing from the shell that runs the benchmark: Lambda gives none of it.
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        # Where Lambda unpacks the code; Powertools and the X-Ray SDK read it to know they
        # run on Lambda (and so turn tracing on, unless the template turns it off).
        "LAMBDA_TASK_ROOT": "/var/task",
        "_HANDLER": properties["Handler"],
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(properties.get("MemorySize", 128)),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        **function_environment(template, function, resolved),
    }


def function_serving(template: dict[str, Any], route_key: str) -> str:
    """The logical id of the function that serves `route_key` ("GET /path")."""
    function: str = next(r.function for r in routes(template) if r.route_key == route_key)
    return function


def handler_targets(template: dict[str, Any]) -> list[ImportTarget]:
    """One per function of the template, in its order, with its budget."""
    seen: dict[str, ImportTarget] = {}
    get_config = function_serving(template, GET_CONFIG_ROUTE)
    for route in routes(template):
        if route.function in seen:
            continue
        source = route.code_uri / f"{route.handler.rpartition('.')[0]}.py"
        seen[route.function] = ImportTarget(
            label=f"{route.function} ({source.relative_to(TEMPLATE_PATH.parent)})",
            environment=lambda_environment(template, route.function),
            handler=Handler(route.function, route.code_uri, route.handler),
            budget=GET_CONFIG_BUDGET if route.function == get_config else HANDLER_BUDGET,
        )
    return list(seen.values())


def import_targets(template: dict[str, Any]) -> list[ImportTarget]:
    """The boto3 floor, the mandated stack, every handler and the whole layer. The rows that
    are not a handler run with the first function's environment."""
    handlers = handler_targets(template)
    environment = handlers[0].environment

    def module(label: str, name: str) -> ImportTarget:
        return ImportTarget(label, environment, module=name)

    return [
        module(BOTO3_FLOOR, "boto3"),
        module(FRAMEWORK_FLOOR, "mailbridge_bench.framework_floor"),
        *handlers,
        module("whole layer: every mailbridge module", "mailbridge_bench.whole_layer"),
    ]


def probe(target: ImportTarget) -> ProbeResult:
    """Runs `target`'s import in a fresh interpreter."""
    completed = subprocess.run(  # noqa: S603 - this interpreter, our own probe module
        [sys.executable, "-m", "mailbridge_bench.probe", *target.probe_arguments],
        env=target.environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{target.label}: the probe failed\n{completed.stderr}")
    result = json.loads(completed.stdout.splitlines()[-1])
    return ProbeResult(result["seconds"], result["peak_rss"])


def measure_imports(targets: list[ImportTarget], runs: int) -> list[ImportResult]:
    """Medians over `runs` rounds. Each round runs every target once, so a slow moment of
    the machine touches all rows alike; a first, discarded round warms the caches (bytecode,
    the file system) as a deployed function's are."""
    samples: dict[str, list[ProbeResult]] = {target.label: [] for target in targets}
    for round_number in range(runs + 1):
        for target in targets:
            result = probe(target)
            if round_number:
                samples[target.label].append(result)
    return [
        ImportResult(
            target,
            statistics.median(sample.seconds for sample in samples[target.label]),
            int(statistics.median(sample.peak_rss for sample in samples[target.label])),
        )
        for target in targets
    ]
