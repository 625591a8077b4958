"""What Lambda does for each function of the template: its handler, loaded from its CodeUri
on first use, run with a context object, one request at a time per instance and in as many
instances as there are concurrent requests, its AWS calls held to its execution role (iam);
and the template's environment, which all functions share in this one process (a variable
two of them would set differently is refused rather than guessed)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..functions import load_function_module
from ..template import (
    FunctionCode,
    TemplateError,
    function_code,
    function_environment,
    function_ids,
    function_properties,
)
from .aws import ACCOUNT_ID, REGION
from .iam import Policy, acting_as

Handler = Callable[[dict[str, Any], "LambdaContext"], Any]


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline: float  # time.monotonic() at which Lambda would stop the invocation

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class LambdaFunction:
    """One function, scaled out as Lambda does: a request goes to an idle instance, or to a
    new one when every instance is busy, so concurrent requests really run concurrently.
    An instance is its own load of the handler module and takes one request at a time."""

    def __init__(
        self, name: str, code: FunctionCode, memory_mb: int, timeout_seconds: float
    ) -> None:
        self.name = name
        self._code_uri = code.code_uri
        self._handler_name = code.handler
        self._memory_mb = memory_mb
        self._timeout_seconds = timeout_seconds
        # Its execution role; LocalApi sets it from the template once it can resolve it.
        # Until then nothing is allowed.
        self.policy = Policy(self.name)
        self._idle: list[Handler] = []
        self._instances = 0
        self._lock = threading.Lock()

    def invoke(self, event: dict[str, Any]) -> Any:
        # The module's load on a new instance is the function's too: Lambda's init phase runs
        # with its role.
        with acting_as(self.policy):
            handler = self._take_instance()
            try:
                context = LambdaContext(
                    function_name=self.name,
                    memory_limit_in_mb=self._memory_mb,
                    invoked_function_arn=(
                        f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.name}"
                    ),
                    aws_request_id=str(uuid.uuid4()),
                    deadline=time.monotonic() + self._timeout_seconds,
                )
                return handler(event, context)
            finally:
                with self._lock:
                    self._idle.append(handler)

    def _take_instance(self) -> Handler:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            instance = self._instances
            self._instances += 1
        module = load_function_module(self.name, self._code_uri, self._handler_name, instance)
        handler: Handler = getattr(module, self._handler_name.rpartition(".")[2])
        return handler


def lambda_functions(template: dict[str, Any], base_dir: Path) -> dict[str, LambdaFunction]:
    """Every function of the template, by name, with its memory and timeout; CodeUri is
    relative to `base_dir`."""
    functions: dict[str, LambdaFunction] = {}
    for name in function_ids(template):
        properties = function_properties(template, name)
        functions[name] = LambdaFunction(
            name,
            function_code(template, name, base_dir),
            memory_mb=int(properties.get("MemorySize", 128)),
            timeout_seconds=float(properties.get("Timeout", 3)),
        )
    return functions


def shared_environment(
    template: dict[str, Any], functions: Iterable[str], resolved: dict[str, str]
) -> dict[str, str]:
    environment: dict[str, str] = {}
    for function in sorted(functions):
        for name, value in function_environment(template, function, resolved).items():
            if environment.setdefault(name, value) != value:
                raise TemplateError(
                    f"{name} differs between functions; one local process cannot give each "
                    "function its own value"
                )
    return environment
