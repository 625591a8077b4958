"""Seeing, and breaking, every AWS call the functions make: botocore's event hooks on the
clients the layer uses (the local API runs the functions in this process, on those clients).

A fault stands in for what DynamoDB and Secrets Manager do on a bad day. It is injected at
botocore's send step, so botocore's own retries run as in production: every attempt fails,
except with `lost_response`, where the first attempt reaches AWS and is applied, its answer
is lost, and botocore retries what was already done.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

FAULTS = ("throttled", "server_error", "timeout", "lost_response")
_WRITES = ("Put", "Update", "Delete", "Create", "BatchWrite", "Transact")


@dataclass(frozen=True)
class AwsCall:
    service: str  # dynamodb, secretsmanager
    operation: str  # PutItem, GetSecretValue...

    @property
    def writes(self) -> bool:
        return self.operation.startswith(_WRITES)

    def __str__(self) -> str:
        return f"{self.service}.{self.operation}"


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def _error(url: str, status: int, code: str) -> AWSResponse:
    body = json.dumps({"__type": code, "message": f"injected {code}"}).encode()
    return AWSResponse(url, status, {"Content-Type": "application/x-amz-json-1.0"}, _Body(body))


class AwsCalls:
    """Records the calls made while `recording()`, and breaks the `index`-th one (counting
    from 0, retries not counted) while `failing(index, fault)`."""

    def __init__(self, clients: list[Any]) -> None:
        self._lock = threading.Lock()
        self._calls: list[AwsCall] | None = None
        self._target: tuple[int, str] | None = None
        self._broken: dict[int, int] = {}  # threads inside the call being broken: attempts
        self._unprocessing = False
        self._before: tuple[str, Callable[[], object]] | None = None
        self._http = URLLib3Session()
        for client in clients:
            events = client.meta.events
            events.register("before-call", self._before_call)
            events.register("before-send", self._before_send)

    @contextmanager
    def recording(self) -> Iterator[list[AwsCall]]:
        calls: list[AwsCall] = []
        with self._lock:
            self._calls = calls
        try:
            yield calls
        finally:
            with self._lock:
                self._calls = None

    @contextmanager
    def failing(self, index: int, fault: str) -> Iterator[list[AwsCall]]:
        with self.recording() as calls:
            self._target = (index, fault)
            try:
                yield calls
            finally:
                self._target = None
                self._broken.clear()

    @contextmanager
    def unprocessing(self) -> Iterator[None]:
        """Every BatchGetItem answers with all its keys unprocessed (DynamoDB throttling a
        partition): no error, and nothing read."""
        self._unprocessing = True
        try:
            yield
        finally:
            self._unprocessing = False

    @contextmanager
    def before(self, operation: str, action: Callable[[], object]) -> Iterator[None]:
        """Runs `action` once, just before the next `operation` call (say "CreateSecret"):
        another request landing at that exact point of this one."""
        self._before = (operation, action)
        try:
            yield
        finally:
            self._before = None

    def _before_call(self, model: Any, **_: Any) -> None:
        planned = self._before
        if planned is not None and planned[0] == model.name:
            self._before = None  # once; its own calls pass
            planned[1]()
        with self._lock:
            if self._calls is None:
                return
            self._calls.append(AwsCall(model.service_model.service_name, model.name))
            if self._target is not None and len(self._calls) - 1 == self._target[0]:
                self._broken[threading.get_ident()] = 0
            else:
                self._broken.pop(threading.get_ident(), None)

    def _fault(self) -> tuple[str, int] | None:
        """The fault to inject in this attempt, and how many attempts came before it."""
        thread = threading.get_ident()
        if self._target is None or thread not in self._broken:
            return None
        attempt = self._broken[thread]
        self._broken[thread] = attempt + 1
        return self._target[1], attempt

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        target = request.headers.get("X-Amz-Target") or b""
        target = target.decode() if isinstance(target, bytes) else target
        if self._unprocessing and target.endswith(".BatchGetItem"):
            asked = json.loads(request.body)["RequestItems"]
            body = json.dumps({"Responses": {}, "UnprocessedKeys": asked}).encode()
            return AWSResponse(request.url, 200, {}, _Body(body))
        fault = self._fault()
        if fault is None:
            return None
        kind, attempt = fault
        if kind == "throttled":
            return _error(request.url, 400, "ThrottlingException")
        if kind == "server_error":
            return _error(request.url, 500, "InternalServerError")
        if kind == "timeout" or attempt == 0:  # lost_response: applied, answer dropped
            if kind == "lost_response":
                self._http.send(request)
            raise ReadTimeoutError(endpoint_url=request.url)
        return None  # lost_response's retries go through
