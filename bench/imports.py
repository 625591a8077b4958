"""Cold starts as Lambda pays them: each function's handler imported, and its first request
handled, by the runtime's Python in a fresh interpreter, from the code laid out as Lambda lays
it out (`deployed.Deployment`), with bytecode writing off as on Lambda; next to the framework
floor measured the same way.

The functions, their handlers and their environment come from template.yaml, so a function,
a handler or a variable (tracing turned off, say) that changes there changes here.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailbridge_tools.template import (
    TEMPLATE_PATH,
    function_code,
    function_environment,
    function_ids,
    function_properties,
    routes,
    table_logical_id,
)

from .deployed import Deployment

REGION = "us-east-1"
BOTO3_FLOOR = "import boto3"
FRAMEWORK_FLOOR = "framework floor: boto3, resolver, pydantic, Logger, Metrics"
FLOOR_FUNCTION = "FrameworkFloor"
FLOOR_CODE = Path(__file__).with_name("floor_function")
WHOLE_LAYER = "whole layer: every mailbridge module"
PROBE = Path(__file__).with_name("lambda_probe.py")
EVENTS = TEMPLATE_PATH.parent / "events"
# The budgets, as multiples of the framework floor: every handler's import, the
# import of the handler serving this route (the Email tab's first call, the cold start users
# wait on), and every first request against the floor's.
HANDLER_BUDGET = 1.15
GET_CONFIG_BUDGET = 1.10
FIRST_REQUEST_BUDGET = 1.2
# The layer's bytecode: the handlers' imports with it, at most this part of without it.
BYTECODE_BUDGET = 0.80
# CPython's frame stack chunk (16 KB) in 8-byte slots: the rounds start the probes at depths
# spread across one (lambda_probe.at_stack_offset says why).
FRAME_CHUNK_SLOTS = 16 * 1024 // 8
GET_CONFIG_ROUTE = "GET /bridge/agents/{agentId}/email-config"
CONNECTION_TEST_ROUTE = "POST /bridge/agents/{agentId}/email-config/test"


@dataclass(frozen=True)
class Handler:
    """A function's handler, as the template names it."""

    function: str  # the logical id
    code_uri: Path
    name: str  # "app.handler"

    def arguments(self) -> list[str]:
        """For `mailbridge_tools.functions.load_function_module`, in a child process."""
        return [self.function, str(self.code_uri), self.name]


@dataclass(frozen=True)
class ImportTarget:
    """One row: a module to import, or a function's handler to load and, with a sample
    event, invoke once."""

    label: str
    environment: dict[str, str]
    module: str | None = None
    handler: Handler | None = None
    budget: float | None = None  # the most its import may cost, in multiples of the floor
    event: dict[str, Any] | None = None  # its first request: a sample of events/
    event_source: str = ""  # what sends it: the route ("GET /..."), or the sample's file

    def spec(self, deployment: Deployment, layer: Path, offset: int) -> dict[str, Any]:
        """The probe's spec: Lambda's sys.path order, then what to import or invoke, from
        `offset` slots deeper in the frame stack (`stack_offset`)."""
        return {"stack_offset": offset, **self._import_spec(deployment, layer)}

    def _import_spec(self, deployment: Deployment, layer: Path) -> dict[str, Any]:
        if self.module == WHOLE_LAYER:
            return {
                "paths": [str(layer), str(deployment.runtime_packages)],
                "every_module_of": "mailbridge",
            }
        if self.handler is None:
            return {"paths": [str(layer), str(deployment.runtime_packages)], "module": self.module}
        task_root = deployment.task_roots[self.handler.function]
        return {
            "paths": [str(task_root), str(layer), str(deployment.runtime_packages)],
            "handler": self.handler.name,
            "function": self.handler.function,
            "memory_mb": int(self.environment.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
            "event": self.event,
        }


@dataclass(frozen=True)
class ProbeResult:
    import_seconds: float
    peak_rss: int  # bytes
    request_seconds: float | None = None  # the import and the first request
    status: int | None = None  # an HTTP function's
    answer: dict[str, Any] | None = None  # what another function returned


@dataclass
class ImportResult:
    """A row's times, with the layer's bytecode and, where measured, without it: the fastest
    of the rounds. An import and a first request are fixed work; on a shared machine other
    processes only ever add to them, and in bursts that can take most of a row's rounds
    (the floor's median 38% apart between two runs), so the fastest is the steady
    estimate, as timeit's documentation argues. The rounds start at different depths of the
    frame stack (`stack_offset`), so it is also the depth a frame chunk's edge slowed least.
    Peak RSS: the median."""

    target: ImportTarget
    samples: list[ProbeResult] = field(default_factory=list)
    without_bytecode: list[ProbeResult] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return min(sample.import_seconds for sample in self.samples)

    @property
    def peak_rss(self) -> int:
        return int(statistics.median(sample.peak_rss for sample in self.samples))

    @property
    def first_request(self) -> float | None:
        times = [s.request_seconds for s in self.samples if s.request_seconds is not None]
        return min(times) if times else None

    @property
    def status(self) -> int | None:
        return self.samples[-1].status

    @property
    def answer(self) -> dict[str, Any] | None:
        return self.samples[-1].answer

    @property
    def seconds_without_bytecode(self) -> float | None:
        times = [sample.import_seconds for sample in self.without_bytecode]
        return min(times) if times else None


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


def sample_events() -> dict[str, Path]:
    """The sample events of events/ that are a route's, by route key."""
    samples: dict[str, Path] = {}
    for path in sorted(EVENTS.glob("*.json")):
        route_key = json.loads(path.read_text()).get("routeKey")
        if route_key:
            samples.setdefault(route_key, path)
    return samples


def invocation_samples(function_of: Callable[[dict[str, Any]], str]) -> dict[str, Path]:
    """The sample events of events/ that are no route's (the Scheduler's, SQS's), by the
    function `function_of` finds each is for."""
    samples: dict[str, Path] = {}
    for path in sorted(EVENTS.glob("*.json")):
        event = json.loads(path.read_text())
        if "routeKey" not in event:
            samples.setdefault(function_of(event), path)
    return samples


def handler_targets(
    template: dict[str, Any],
    parameters: dict[str, str] | None = None,
    function_of: Callable[[dict[str, Any]], str] | None = None,
) -> list[ImportTarget]:
    """One per function of the template, in its order, with its budget and its first
    request: for a function that serves routes, its first GET route's sample event, else
    its first route's; for one invoked otherwise (new mail's, by the Scheduler and SQS), the
    sample `function_of` finds is for it, when given."""
    get_config = function_serving(template, GET_CONFIG_ROUTE)
    samples = sample_events()
    invocations = invocation_samples(function_of) if function_of else {}
    served: dict[str, list[str]] = {}
    for route in routes(template):
        served.setdefault(route.function, []).append(route.route_key)
    targets = []
    for function in function_ids(template):
        code = function_code(template, function)
        source = code.code_uri / f"{code.handler.rpartition('.')[0]}.py"
        with_samples = [key for key in served.get(function, []) if key in samples]
        chosen = next((key for key in with_samples if key.startswith("GET ")), None)
        chosen = chosen or next(iter(with_samples), None)
        sample, event_source = None, ""
        if chosen:
            sample, event_source = samples[chosen], chosen
        elif function in invocations:
            sample = invocations[function]
            event_source = str(sample.relative_to(TEMPLATE_PATH.parent))
        targets.append(
            ImportTarget(
                label=f"{function} ({source.relative_to(TEMPLATE_PATH.parent)})",
                environment=lambda_environment(template, function, parameters),
                handler=Handler(function, code.code_uri, code.handler),
                budget=GET_CONFIG_BUDGET if function == get_config else HANDLER_BUDGET,
                event=json.loads(sample.read_text()) if sample else None,
                event_source=event_source,
            )
        )
    return targets


def floor_target(
    template: dict[str, Any], parameters: dict[str, str] | None = None
) -> ImportTarget:
    """The framework floor as a function of its own, with the GET config function's
    environment (its table), and its route's request: one GetItem of the demo agent."""
    function = function_serving(template, GET_CONFIG_ROUTE)
    sample = json.loads(sample_events()[GET_CONFIG_ROUTE].read_text())
    path = "/floor/demo-agent"
    sample.update(routeKey="GET /floor/{key}", rawPath=path, pathParameters={"key": "demo-agent"})
    sample["requestContext"].update(routeKey="GET /floor/{key}")
    sample["requestContext"]["http"].update(path=path)
    return ImportTarget(
        label=FRAMEWORK_FLOOR,
        environment=lambda_environment(template, function, parameters),
        handler=Handler(FLOOR_FUNCTION, FLOOR_CODE, "app.handler"),
        event=sample,
        event_source="GET /floor/{key}",
    )


def import_targets(
    template: dict[str, Any],
    parameters: dict[str, str],
    function_of: Callable[[dict[str, Any]], str],
) -> list[ImportTarget]:
    """The boto3 floor, the framework floor, every handler and the whole layer. The rows
    that are not a function's run with the floor's environment."""
    floor = floor_target(template, parameters)
    return [
        ImportTarget(BOTO3_FLOOR, floor.environment, module="boto3"),
        floor,
        *handler_targets(template, parameters, function_of),
        ImportTarget(WHOLE_LAYER, floor.environment, module=WHOLE_LAYER),
    ]


def task_sources(targets: Iterable[ImportTarget]) -> dict[str, Path]:
    """The code each target's task root is built from (its CodeUri), by function."""
    return {t.handler.function: t.handler.code_uri for t in targets if t.handler is not None}


def stack_offset(round_number: int, runs: int) -> int:
    """Where round `round_number` (1 to `runs`) starts its probes in the frame stack: each
    round at another depth, the rounds spread evenly across one chunk. The discarded warm-up
    round (0) starts at the top."""
    return (round_number - 1) * FRAME_CHUNK_SLOTS // runs if round_number else 0


def probe(
    target: ImportTarget,
    deployment: Deployment,
    layer: Path,
    aws: dict[str, str],
    offset: int,
) -> ProbeResult:
    """Runs `target` in a fresh interpreter of the deployment's runtime, with bytecode
    writing off (Lambda's /opt and /var/task are read-only), `aws` pointing its clients,
    `offset` slots deep in the frame stack."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as spec:
        json.dump(target.spec(deployment, layer, offset), spec)
        spec.flush()
        completed = subprocess.run(  # noqa: S603 - the runtime's interpreter, our probe
            [deployment.python, "-s", "-B", str(PROBE), spec.name],
            env={**target.environment, **aws, "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True,
            text=True,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"{target.label}: the probe failed\n{completed.stderr}")
    result = json.loads(completed.stdout.splitlines()[-1])
    status, answer = result.get("status"), result.get("answer")
    if target.event is not None and not _handled(status, answer):
        # A handler that fails fast must not pass for a fast one.
        raise RuntimeError(f"{target.label}: its first request answered {status or answer}")
    return ProbeResult(
        result["import_seconds"], result["peak_rss"], result.get("request_seconds"), status, answer
    )


def _handled(status: Any, answer: Any) -> bool:
    """An HTTP function's answer under 500, or another function's answer that reports no
    failed SQS message (a batch's failures come back as `batchItemFailures`)."""
    if isinstance(status, int):
        return status < 500
    return isinstance(answer, dict) and not answer.get("batchItemFailures")


@dataclass(frozen=True)
class Group:
    """Targets measured on one deployment; `without_bytecode`: the functions and the floor
    also without the layer's bytecode."""

    deployment: Deployment
    targets: list[ImportTarget]
    without_bytecode: bool = False


def measure_imports(
    groups: list[Group], runs: int, aws: dict[str, str], reseed: Callable[[], None]
) -> list[list[ImportResult]]:
    """Every round's samples, by group (ImportResult takes the fastest). Each round runs
    every target of every group once (and once more without the bytecode where asked), so a
    slow moment of the machine touches all rows alike, and all from the same depth in the
    frame stack, another one each round; a first, discarded round warms the file system
    cache as a deployed function's is. Each first request meets AWS as `reseed` leaves it,
    whatever the requests before it wrote."""
    results = [[ImportResult(target) for target in group.targets] for group in groups]

    def sample(target: ImportTarget, deployment: Deployment, layer: Path) -> ProbeResult:
        if target.event is not None:
            reseed()
        return probe(target, deployment, layer, aws, offset)

    for round_number in range(runs + 1):
        offset = stack_offset(round_number, runs)
        for group, group_results in zip(groups, results, strict=True):
            deployment = group.deployment
            for result in group_results:
                measured = sample(result.target, deployment, deployment.layer)
                other = None
                if group.without_bytecode and result.target.handler is not None:
                    other = sample(result.target, deployment, deployment.layer_without_bytecode)
                if round_number:
                    result.samples.append(measured)
                    if other is not None:
                        result.without_bytecode.append(other)
    return results
