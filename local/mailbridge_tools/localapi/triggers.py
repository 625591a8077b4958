"""What invokes a function besides API Gateway, as AWS does it: EventBridge Scheduler (the
functions' ScheduleV2 events), Lambda's SQS event source mapping (their SQS events), and
EventBridge delivering what is put on the template's buses to a target (the recorder). On
demand (LocalApi.run_schedule, process_queue, mail_events) or in the background, on threads
that run until the LocalApi stops (`make run`: a clock, a poller per queue, the recorder).

The calls these make to AWS (receiving, deleting, showing again the queue's messages,
reading the recorder's queue) are AWS's own, not any function's (iam.aws_itself); the
functions they invoke are held to their policies as always.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from ..template import QueueSource, Schedule, TemplateError
from .aws import ACCOUNT_ID, REGION, queue_arn
from .iam import aws_itself
from .lambda_runtime import LambdaFunction

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueOutputTypeDef, MessageTypeDef

_log = logging.getLogger(__name__)

_RECEIVE_MOST = 10  # ReceiveMessage's and the batch calls' most per call
_RATE = re.compile(r"rate\(([1-9][0-9]*) (minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


# -- EventBridge Scheduler


def rate_seconds(expression: str) -> float:
    """The period of a `rate(N minute|minutes|hour|hours|day|days)` schedule, in seconds."""
    found = _RATE.fullmatch(expression.strip())
    if found is None:
        raise TemplateError(
            f"{expression}: only rate(N minutes|hours|days) schedules run on the local clock"
        )
    return int(found[1]) * _UNIT_SECONDS[found[2].removesuffix("s")]


def fire(function: LambdaFunction, schedule: Schedule) -> Any:
    """What Scheduler does at a tick: invokes the function with the schedule's Input; the
    handler's result."""
    # A payload of its own each time: a handler may change the event it is given.
    return function.invoke(copy.deepcopy(schedule.input))


def clock(
    ticking: list[tuple[Schedule, float]], functions: dict[str, LambdaFunction]
) -> Callable[[threading.Event], None]:
    """The loop of a thread that fires each schedule every `period` seconds, the first time
    one period after the start, until `stopping` is set. Scheduler invokes asynchronously and
    retries by its RetryPolicy; here the schedules fire one after the other on this thread,
    and a failure is logged, not retried (the next tick comes)."""

    def run(stopping: threading.Event) -> None:
        started = time.monotonic()
        due = [started + period for _, period in ticking]
        while True:
            index = min(range(len(ticking)), key=due.__getitem__)
            if stopping.wait(max(0.0, due[index] - time.monotonic())):
                return
            schedule, period = ticking[index]
            try:
                fire(functions[schedule.function], schedule)
            except Exception:
                _log.exception("%s failed on its schedule %s", schedule.function, schedule.name)
            # Ticks missed while firing are skipped, as a fixed rate does.
            now = time.monotonic()
            while due[index] <= now:
                due[index] += period

    return run


# -- Lambda's SQS event source mapping


class QueueMapping:
    """Lambda's event source mapping of one SQS event: receives up to a batch from the
    queue, invokes the function with it as Lambda's SQS event, and deletes the records that
    succeeded: all of them when the function returns, unless it reports some as failed
    (`batchItemFailures`, when FunctionResponseTypes has ReportBatchItemFailures); none when
    it raises. A failed record is received again once its visibility timeout ends, until the
    queue's RedrivePolicy moves it to the dead-letter queue after maxReceiveCount receives
    (moto does that move, as SQS does)."""

    def __init__(
        self,
        source: QueueSource,
        function: LambdaFunction,
        client: SQSClient,
        queue_url: str,
        queue_name: str,
        redrives: bool,
    ) -> None:
        self.source = source
        self._function = function
        self._client = client
        self._url = queue_url
        self._arn = queue_arn(queue_name)
        self._redrives = redrives  # the queue has a RedrivePolicy

    def deliver_batch(self, *, retry_at_once: bool) -> int:
        """One batch: how many records the function was given (0: no message was visible).

        `retry_at_once` is the local run's time skip: the records that failed are made
        visible again now instead of when their visibility timeout ends, so a test sees the
        retries and the redrive at once. Only on a queue with a RedrivePolicy: without one
        they would be retried forever, so their timeout runs as in SQS."""
        with aws_itself():
            messages = self._receive()
        if not messages:
            return 0
        event = {"Records": [self._record(message) for message in messages]}
        failed = self._failures(event, [message["MessageId"] for message in messages])
        with aws_itself():
            self._delete([m for m in messages if m["MessageId"] not in failed])
            if failed and retry_at_once and self._redrives:
                _show_again(
                    self._client, self._url, [m for m in messages if m["MessageId"] in failed]
                )
        return len(messages)

    def _receive(self) -> list[MessageTypeDef]:
        """Up to BatchSize messages, in as many receives as that takes."""
        messages: list[MessageTypeDef] = []
        while len(messages) < self.source.batch_size:
            answer = self._client.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=min(_RECEIVE_MOST, self.source.batch_size - len(messages)),
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = answer.get("Messages", [])
            if not received:
                break
            messages += received
        return messages

    def _record(self, message: MessageTypeDef) -> dict[str, Any]:
        """A record of Lambda's SQS event."""
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self._arn,
            "awsRegion": REGION,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record

    def _failures(self, event: dict[str, Any], ids: list[str]) -> set[str]:
        """The ids of the records that failed."""
        try:
            result = self._function.invoke(event)
        except Exception:
            _log.exception(
                "%s failed on a batch of %d from %s: every record of it is tried again",
                self._function.name,
                len(ids),
                self.source.queue,
            )
            return set(ids)
        if not self.source.report_item_failures:
            return set()
        failed = _reported_failures(result, set(ids))
        if failed is None:
            _log.error(
                "%s answered its batch with an invalid batchItemFailures: Lambda fails the "
                "whole batch",
                self._function.name,
            )
            return set(ids)
        return failed

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        for start in range(0, len(messages), _RECEIVE_MOST):
            chunk = messages[start : start + _RECEIVE_MOST]
            answer = self._client.delete_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
            for failure in answer.get("Failed", []):
                _log.error("SQS did not delete a record of %s: %s", self.source.queue, failure)


def _lambda_attribute(value: MessageAttributeValueOutputTypeDef) -> dict[str, Any]:
    """A message attribute as Lambda's SQS event spells it (binary values in base64)."""
    attribute: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
    return attribute


def _reported_failures(result: Any, ids: set[str]) -> set[str] | None:
    """The failed records a function's answer reports, by Lambda's rules: none for an empty
    answer or list; None (the whole batch failed) when an answer or an itemIdentifier is
    invalid, empty, or not a record of the batch."""
    if result is None:
        return set()
    if not isinstance(result, dict):
        return None
    items = result.get("batchItemFailures")
    if not items:
        return set()
    if not isinstance(items, list):
        return None
    failed = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in ids:
            return None
        failed.add(identifier)
    return failed


def poller(mapping: QueueMapping, idle_seconds: float) -> Callable[[threading.Event], None]:
    """The loop of a thread that delivers the queue's batches as they come, looking again
    every `idle_seconds` while it is empty, until `stopping` is set. Failed records wait for
    their visibility timeout, as in SQS."""

    def run(stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                delivered = mapping.deliver_batch(retry_at_once=False)
            except Exception:
                _log.exception("the event source mapping of %s failed", mapping.source.queue)
                delivered = 0
            if not delivered:
                stopping.wait(idle_seconds)

    return run


# -- EventBridge delivering the bus's events to a target


class BusRecorder:
    """Every event put on the template's buses, as EventBridge delivers it to a target: a
    rule on each bus matching all of its events (the account's) targets a queue of the local
    run's own, `<stack>-local-bus-events`; moto delivers to it, and `collect` reads it."""

    def __init__(
        self,
        sqs: SQSClient,
        events: EventBridgeClient,
        stack_name: str,
        bus_names: list[str],
        observers: list[Callable[[dict[str, Any]], None]],
    ) -> None:
        self._sqs = sqs
        name = f"{stack_name}-local-bus-events"
        self._url = sqs.create_queue(QueueName=name)["QueueUrl"]
        # moto's backends outlive a run: another run of the same name in this process left it.
        sqs.purge_queue(QueueUrl=self._url)
        for bus in bus_names:
            rule = f"{stack_name}-local-recorder"
            events.put_rule(
                Name=rule, EventBusName=bus, EventPattern=json.dumps({"account": [ACCOUNT_ID]})
            )
            events.put_targets(
                Rule=rule, EventBusName=bus, Targets=[{"Id": "recorder", "Arn": queue_arn(name)}]
            )
        self._observers = observers
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def events(self) -> list[dict[str, Any]]:
        """Every event delivered since the start, oldest first."""
        self.collect()
        with self._lock:
            return copy.deepcopy(self._events)

    def collect(self) -> None:
        """Takes what was delivered since the last look, and tells the observers of each."""
        with self._lock, aws_itself():
            arrived = []
            while True:
                answer = self._sqs.receive_message(
                    QueueUrl=self._url, MaxNumberOfMessages=_RECEIVE_MOST
                )
                messages = answer.get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    event = json.loads(message["Body"])
                    # moto leaves it out; EventBridge always sends it.
                    event.setdefault("account", ACCOUNT_ID)
                    arrived.append(event)
                self._sqs.delete_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                        for index, message in enumerate(messages)
                    ],
                )
            self._events += arrived
        for event in arrived:
            for observe in self._observers:
                observe(event)


def recording(recorder: BusRecorder, every_seconds: float) -> Callable[[threading.Event], None]:
    """The loop of a thread that collects the recorder's events every `every_seconds`."""

    def run(stopping: threading.Event) -> None:
        while not stopping.wait(every_seconds):
            try:
                recorder.collect()
            except Exception:
                _log.exception("the recorder of the bus's events failed")

    return run


# -- the background


def in_background(stack: ExitStack, name: str, loop: Callable[[threading.Event], None]) -> None:
    """Runs `loop(stopping)` on a thread of its own until `stack` closes, which sets
    `stopping` and waits for the thread to end (an invocation under way ends first)."""
    stopping = threading.Event()

    def run() -> None:
        with aws_itself():
            loop(stopping)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    stack.callback(thread.join)
    stack.callback(stopping.set)


def peek_bodies(client: SQSClient, queue_url: str) -> list[str]:
    """The bodies of the messages in a queue, which stay in it: received (a receive counts,
    as `aws sqs receive-message` does) and made visible again."""
    with aws_itself():
        seen: list[MessageTypeDef] = []
        while True:
            # Hidden meanwhile, so that each is received once.
            answer = client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=_RECEIVE_MOST, VisibilityTimeout=60
            )
            received = answer.get("Messages", [])
            if not received:
                break
            seen += received
        _show_again(client, queue_url, seen)
    return [message["Body"] for message in seen]


def _show_again(client: SQSClient, queue_url: str, messages: list[MessageTypeDef]) -> None:
    """Makes received messages visible again now."""
    for start in range(0, len(messages), _RECEIVE_MOST):
        client.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(index),
                    "ReceiptHandle": message["ReceiptHandle"],
                    "VisibilityTimeout": 0,
                }
                for index, message in enumerate(messages[start : start + _RECEIVE_MOST])
            ],
        )
