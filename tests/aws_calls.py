"""Seeing, and breaking, every AWS call the functions make: botocore's event hooks on the
clients the layer uses (the local API runs the functions in this process, on those clients).

A fault stands in for what DynamoDB and Secrets Manager do on a bad day. It is injected at
botocore's send step, so botocore's own retries run as in production (they all fail), except
`lost_response`: the call reaches AWS and is applied, then its answer is lost.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

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
        self._broken: set[int] = set()  # threads inside the call being broken
        for client in clients:
            events = client.meta.events
            events.register("before-call", self._before_call)
            events.register("before-send", self._before_send)
            events.register("after-call", self._after_call)

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

    def _before_call(self, model: Any, **_: Any) -> None:
        with self._lock:
            if self._calls is None:
                return
            self._calls.append(AwsCall(model.service_model.service_name, model.name))
            if self._target is not None and len(self._calls) - 1 == self._target[0]:
                self._broken.add(threading.get_ident())
            else:
                self._broken.discard(threading.get_ident())

    def _fault(self) -> str | None:
        if self._target is None or threading.get_ident() not in self._broken:
            return None
        return self._target[1]

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        fault = self._fault()
        if fault == "throttled":
            return _error(request.url, 400, "ThrottlingException")
        if fault == "server_error":
            return _error(request.url, 500, "InternalServerError")
        if fault == "timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        return None

    def _after_call(self, **_: Any) -> None:
        if self._fault() == "lost_response":
            self._broken.discard(threading.get_ident())
            raise ReadTimeoutError(endpoint_url="(the answer was lost)")
