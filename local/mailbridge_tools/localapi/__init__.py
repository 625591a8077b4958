"""The whole API on one machine, without Docker: `python -m mailbridge_tools.localapi`.

What SAM deploys, emulated in one process from template.yaml:
- DynamoDB, Secrets Manager, SQS and EventBridge: moto's server on loopback; AWS_ENDPOINT_URL
  points every boto3 client there, so the handlers run unchanged (aws). The template's
  table, queues (with their RedrivePolicy and attributes) and event buses are made there,
  named after the stack, whose name (AWS::StackName) is the table's: `<table>-<QueueId>`.
- API Gateway (HTTP API, payload format 2.0): routes from the functions' HttpApi events, the
  JWT authorizer (tokens from a DevIssuer), the 2.0 event and the response mapping (gateway;
  server is the HTTP in front of it).
- EventBridge Scheduler and Lambda's SQS event source mapping: the functions' ScheduleV2 and
  SQS events (triggers), fired on demand by a test or, with `background=True` (`make run`),
  by a clock and a poller per queue on threads of their own.
- Lambda: every function's handler module, loaded from its CodeUri under a name of its own,
  with the template's environment; as on Lambda, an instance takes one request at a time
  and concurrent requests get instances of their own, each its own load of the module
  (lambda_runtime), so races between requests are real here too.
- IAM: each AWS call a function makes is held to its Policies in the template, and one they
  do not allow fails with AccessDeniedException as in AWS (iam); moto alone allows anything.

All functions share this process's environment, so a variable that two functions would set
to different values is refused rather than guessed. Instances also share the process's
logger and metrics, so under concurrency a log line may carry another request's keys; on
Lambda each instance is a process of its own. Not emulated: Lambda's timeout (the
context reports the time left, nothing stops a slow handler), ANY methods, {proxy+} paths,
cron() and at() schedules on the background clock, Scheduler's retries, SQS FilterCriteria,
the stage's throttling and access log, log groups, metrics and alarms (docs/operations.md).

For tests, beside `invoke` and `acting_as`:
- `run_schedule(function, event_name)`: what EventBridge Scheduler does at a tick of that
  ScheduleV2 event: invokes the function with the event's Input (parsed JSON); the
  handler's result.
- `process_queue(queue="MailboxQueue")`: what Lambda's event source mapping does with the
  queue (its logical id) until it is empty, messages the function sends meanwhile included:
  receives up to the SQS event's BatchSize, invokes the function with Lambda's SQS event,
  deletes the records that succeeded (all when it returns, but those it lists in
  `batchItemFailures` when the event has ReportBatchItemFailures; none when it raises).
  A failed record is made visible again at once, a time skip of the local run's where SQS
  would wait for the visibility timeout, and received again until the queue's RedrivePolicy
  moves it to the dead-letter queue after maxReceiveCount receives (moto moves it, as SQS
  does). How many records the function was given, retries included.
- `mail_events()`: every event put on the template's buses since the start, as EventBridge
  delivers it to a target (`id`, `source`, `detail-type`, `detail` as JSON, `time`...),
  oldest first: a rule on each bus sends them all to a queue of the local run's own.
- `dead_letters(queue="MailboxDeadLetterQueue")`: the bodies of the messages in a queue,
  which stay there.

Here LocalApi puts them together; web serves the Email tab, the OpenAPI document and the
recorded events beside the API, seed adds the demo agents and cli is the command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3

from ..devauth import DevIssuer
from ..leftovers import stack_secrets
from ..template import (
    TEMPLATE_PATH,
    Route,
    Schedule,
    check_events,
    function_policy,
    load_template,
    queue_properties,
    queue_sources,
    routes,
    schedules,
    table_logical_id,
)
from .aws import (
    ACCOUNT_ID,
    PARTITION,
    REGION,
    create_event_buses,
    create_queues,
    set_env,
    start_aws,
    table_arn,
)
from .gateway import Gateway, HttpResponse
from .iam import Policy, acting_as, enforce
from .lambda_runtime import LambdaContext, LambdaFunction, lambda_functions, shared_environment
from .server import HttpServer, serve
from .triggers import (
    BusRecorder,
    QueueMapping,
    clock,
    fire,
    in_background,
    peek_bodies,
    poller,
    rate_seconds,
    recording,
)
from .web import WebPages

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["HttpResponse", "LambdaContext", "LocalApi"]

# How often, in the background, an empty queue is looked at again and the bus's events read.
_POLL_IDLE_SECONDS = 0.5


class LocalApi:
    """The API served on `host:port` (0: a free port) with its own moto and DevIssuer.

    Use it as a context manager. While it runs, this process's environment is the functions'
    (TABLE_NAME, AWS_ENDPOINT_URL, ...), so code in the same process, such as a test or the
    `seed` hook, reaches the same table; stop() restores the environment.

    With `background`, what AWS runs by itself runs too, on threads that stop with it: a clock
    fires each schedule at its rate (`schedule_periods` gives, by template parameter, the
    seconds between the ticks of the schedules whose expression is that parameter, such as
    {"NewMailPollRate": 5}: faster than rate() allows), a poller per SQS event source
    delivers each queue's messages as they come (failed ones wait for their visibility
    timeout, as in SQS), and the bus's events are recorded as they come. Without it, a test
    fires them itself (run_schedule, process_queue).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: Callable[[LocalApi], None] | None = None,
        template_path: Path = TEMPLATE_PATH,
        table_name: str = "mailbridge-local",
        parameters: dict[str, str] | None = None,
        background: bool = False,
        schedule_periods: Mapping[str, float] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.template_path = template_path
        self.table_name = table_name
        # Template parameter values, as `sam deploy --parameter-overrides` gives them.
        self.parameters = parameters or {}
        self.background = background
        self.schedule_periods = dict(schedule_periods or {})
        self.issuer = DevIssuer()
        self.aws_endpoint_url = ""
        self.routes: list[Route] = []
        self.schedules: list[Schedule] = []
        self._cleanup = ExitStack()
        self._functions: dict[str, LambdaFunction] = {}
        self._queue_urls: dict[str, str] = {}  # by logical id
        self._mappings: dict[str, QueueMapping] = {}  # by the queue's logical id
        self._recorder: BusRecorder | None = None
        self._sqs: SQSClient | None = None  # the local run's own, not any function's
        # Called with every response the gateway answers (tests look for secrets in them).
        self.response_observers: list[Callable[[HttpResponse], None]] = []
        # Called with every event the bus's recorder receives, in the thread that collects it.
        self.mail_event_observers: list[Callable[[dict[str, Any]], None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        template = load_template(self.template_path)
        check_events(template)
        self.routes = routes(template, self.template_path.parent)
        with ExitStack() as stack:
            self.aws_endpoint_url = start_aws(stack, template, self.table_name)
            server = self._bind_http(stack, template)
            table = table_logical_id(template)
            resolved = {
                table: self.table_name,
                f"{table}.Arn": table_arn(self.table_name),
                # The table's name names the run: what the stack names after itself (queues,
                # the bus) is apart from another run's in this process, sharing moto's backends.
                "AWS::StackName": self.table_name,
                # The authorizer's settings: the DevIssuer stands in for the platform's.
                "JwtIssuer": self.issuer.issuer,
                "JwtAudience": self.issuer.audience,
                # OAuth providers redirect here, and the Email tab it serves gets the results.
                "PublicBaseUrl": self.url,
                "AllowedUiOrigins": self.url,
                "AWS::Partition": PARTITION,
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT_ID,
                **self.parameters,
            }
            self._make_queues_and_buses(stack, template, resolved)
            for name, value in shared_environment(template, self._functions, resolved).items():
                set_env(stack, name, value)
            # Each function's execution role, which every AWS call it makes is held to.
            for name, function in self._functions.items():
                statements = function_policy(template, name, resolved)
                function.policy = Policy(name, tuple(statements))
            stack.enter_context(enforce())
            # No CloudWatch here to receive metrics.
            set_env(stack, "POWERTOOLS_METRICS_DISABLED", "true", overwrite=False)
            serve(stack, server)
            if self.seed is not None:
                self.seed(self)
            if self.background:
                self._run_in_background(stack)
            self._cleanup = stack.pop_all()

    def stop(self) -> None:
        self._cleanup.close()

    def invoke(self, event: dict[str, Any], function: str | None = None) -> Any:
        """Runs `function` on the event as given, by default its own (`function_of`), with
        no authorizer check: what `sam local invoke` does with a file from events/."""
        return self._functions[function or self.function_of(event)].invoke(event)

    def function_of(self, event: dict[str, Any]) -> str:
        """The function an event is for: the route's of its routeKey, the one an SQS event's
        queue is delivered to, or the one whose schedule's Input it is."""
        if "routeKey" in event:
            for route in self.routes:
                if route.route_key == event["routeKey"]:
                    return route.function
            raise ValueError(f"no route {event['routeKey']} in the template")
        records = event.get("Records")
        if isinstance(records, list) and records:
            # arn:aws:sqs:<region>:<account>:<stack>-<QueueId>[-<suffix>], as CloudFormation
            # names a queue; the local run's: <table>-<QueueId>.
            queue_name = str(records[0].get("eventSourceARN", "")).rsplit(":", 1)[-1]
            for queue, mapping in self._mappings.items():
                if f"-{queue}" in queue_name:
                    return mapping.source.function
            raise ValueError(f"no function has an SQS event from the queue {queue_name}")
        for schedule in self.schedules:
            if schedule.input == event:
                return schedule.function
        raise ValueError("neither a route's, a queue's nor a schedule's event")

    def acting_as(self, function: str) -> AbstractContextManager[None]:
        """The AWS calls made in the block are `function`'s, held to its policy as its own
        code's are: what a function may do can be checked without a route that does it."""
        return acting_as(self._functions[function].policy)

    def run_schedule(self, function: str, event_name: str) -> Any:
        """What EventBridge Scheduler does at a tick of `function`'s ScheduleV2 event
        `event_name`: invokes it with the event's Input (parsed JSON); the handler's result."""
        for schedule in self.schedules:
            if (schedule.function, schedule.name) == (function, event_name):
                return fire(self._functions[function], schedule)
        raise ValueError(f"{function} has no ScheduleV2 event named {event_name}")

    def process_queue(self, queue: str = "MailboxQueue") -> int:
        """What Lambda's event source mapping does with `queue` (a logical id) until it is
        empty, skipping the visibility timeout of failed records (the module's docstring);
        how many records the function was given, retries included."""
        mapping = self._mappings.get(queue)
        if mapping is None:
            raise ValueError(f"no function has an SQS event from a queue named {queue}")
        delivered = 0
        while batch := mapping.deliver_batch(retry_at_once=True):
            delivered += batch
        return delivered

    def mail_events(self) -> list[dict[str, Any]]:
        """Every event put on the template's buses since the start, oldest first, as
        EventBridge delivers it to a target (its `detail` parsed)."""
        return self._recorder.events() if self._recorder is not None else []

    def dead_letters(self, queue: str = "MailboxDeadLetterQueue") -> list[str]:
        """The bodies of the messages in `queue` (a logical id), left there."""
        if queue not in self._queue_urls:
            raise ValueError(f"no AWS::SQS::Queue named {queue} in the template")
        assert self._sqs is not None  # made with the queues
        return peek_bodies(self._sqs, self._queue_urls[queue])

    def reseed(self) -> None:
        """The table and this run's secrets back to what the seed made, whatever requests
        wrote since (a saved connection, a counted test): the benchmark's first requests
        each meet the same state."""
        if not self.aws_endpoint_url:
            raise RuntimeError("reseed: the local run has not started")
        # The run's own moto, named: never whatever AWS the environment points at.
        dynamodb = boto3.client("dynamodb", endpoint_url=self.aws_endpoint_url)
        secrets = boto3.client("secretsmanager", endpoint_url=self.aws_endpoint_url)
        for items in dynamodb.get_paginator("scan").paginate(
            TableName=self.table_name, ProjectionExpression="pk, sk"
        ):
            for key in items["Items"]:
                dynamodb.delete_item(TableName=self.table_name, Key=key)
        # The run's secrets carry its stack's name, the table's here.
        for name in stack_secrets(self.table_name, secrets):
            secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        dynamodb.close()
        secrets.close()
        if self.seed is not None:
            self.seed(self)

    def __enter__(self) -> LocalApi:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind_http(self, stack: ExitStack, template: dict[str, Any]) -> HttpServer:
        """The listening socket, bound before the environment is set because the
        environment names its URL; requests are served only once it is set."""
        self._functions = lambda_functions(template, self.template_path.parent)
        pages = WebPages(self.routes, self.mail_events)
        gateway = Gateway(
            self.routes, self._functions, self.issuer, self.response_observers, pages.get
        )
        server = HttpServer((self.host, self.port), gateway)
        stack.callback(server.server_close)
        self.port = server.server_address[1]
        return server

    def _make_queues_and_buses(
        self, stack: ExitStack, template: dict[str, Any], resolved: dict[str, str]
    ) -> None:
        """The template's queues and buses in moto, what refers to them resolved, the SQS
        event sources and the bus's recorder."""
        sqs, events = boto3.client("sqs"), boto3.client("events")
        stack.callback(sqs.close)
        stack.callback(events.close)
        self._sqs = sqs
        self._queue_urls = create_queues(sqs, template, self.table_name, resolved)
        buses = create_event_buses(events, template, resolved)
        self._recorder = BusRecorder(sqs, events, self.table_name, buses, self.mail_event_observers)
        self.schedules = schedules(template, resolved)
        self._mappings = {
            source.queue: QueueMapping(
                source,
                self._functions[source.function],
                sqs,
                resolved[source.queue],
                resolved[f"{source.queue}.QueueName"],
                redrives="RedrivePolicy" in queue_properties(template, source.queue),
            )
            for source in queue_sources(template)
        }

    def _run_in_background(self, stack: ExitStack) -> None:
        ticking = [
            (
                schedule,
                self.schedule_periods.get(schedule.parameter or "")
                or rate_seconds(schedule.expression),
            )
            for schedule in self.schedules
            if schedule.enabled
        ]
        if ticking:
            in_background(stack, "localapi-clock", clock(ticking, self._functions))
        for queue, mapping in self._mappings.items():
            if mapping.source.enabled:
                in_background(stack, f"localapi-sqs-{queue}", poller(mapping, _POLL_IDLE_SECONDS))
        if self._recorder is not None:
            in_background(
                stack, "localapi-bus-events", recording(self._recorder, _POLL_IDLE_SECONDS)
            )
