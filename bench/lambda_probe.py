"""One cold start as Lambda has it, run by the runtime's Python in a fresh interpreter:
`python -s -B lambda_probe.py SPEC_FILE`. Standard library only, and run as a file, not
from the benchmark's package: nothing but what is measured is imported.

The spec (JSON) names the directories in Lambda's order (the task root, the layer's
/opt/python, the runtime's packages), then either a module to import (`module`), a handler
to load and, with `event`, invoke once (`handler`: "app.handler"), or a package whose
every module to import (`every_module_of`); and how deep in the interpreter's frame stack to
start (`stack_offset`, in 8-byte slots).

Prints one JSON line: the import's seconds, the first request's (import included), the
status it answered (an HTTP function) or what it returned (another), and the process's peak
RSS.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


class LambdaContext:
    """What Lambda passes a handler: the attributes Powertools and our handlers read."""

    def __init__(self, function_name: str, memory_mb: int) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "probe"
        self._deadline = time.monotonic() + 30

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def main(spec: dict[str, Any]) -> dict[str, Any]:
    sys.path[:0] = spec["paths"]
    result: dict[str, Any] = {}
    started = time.perf_counter()
    if "module" in spec:
        importlib.import_module(spec["module"])
    elif "every_module_of" in spec:
        package = importlib.import_module(spec["every_module_of"])
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    else:
        module_name, _, function_name = spec["handler"].rpartition(".")
        handler = getattr(importlib.import_module(module_name), function_name)
        result["import_seconds"] = time.perf_counter() - started
        if spec.get("event") is not None:
            context = LambdaContext(spec["function"], spec["memory_mb"])
            answer = handler(spec["event"], context)
            result["request_seconds"] = time.perf_counter() - started
            if isinstance(answer, dict) and "statusCode" in answer:
                result["status"] = answer["statusCode"]
            else:  # a function the Scheduler or SQS invokes
                result["answer"] = answer
    result.setdefault("import_seconds", time.perf_counter() - started)
    result["peak_rss"] = _peak_rss()
    return result


def at_stack_offset(slots: int, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Calls `call` from a frame of `slots` extra local slots (8 bytes each), so that all it
    runs sits that much deeper in the interpreter's frame stack.

    CPython (before its March 2026 fix, and 3.12 still) keeps Python frames in 16 KB chunks
    and frees a chunk as soon as its first frame returns: code that keeps calling across a
    chunk's end maps and unmaps a chunk on every call, and is never specialized
    (python/cpython#142183). Which code that is depends only on how deep the import starts,
    so a run at one depth can pay 10 to 20 ms that another does not, floor included.
    Lambda's runtime client starts at a depth of its own, which depends on its version and
    the interpreter's patch release and which the probe does not reproduce: the rounds start
    at depths spread across a chunk instead.
    """
    if not slots:
        return call()
    local_names = " = ".join(f"_{index}" for index in range(slots))
    namespace: dict[str, Any] = {}
    # A generated function: the only way to size a frame in plain Python.
    exec(f"def padded(call):\n    {local_names} = None\n    return call()", namespace)  # noqa: S102
    result: dict[str, Any] = namespace["padded"](call)
    return result


def _peak_rss() -> int:
    """This process's peak resident set, in bytes. Not getrusage's ru_maxrss: Linux carries
    the parent's peak into it across fork and exec, so it would measure the benchmark."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # in kB
    raise RuntimeError("no VmHWM in /proc/self/status: the probe needs Linux")


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    outcome = at_stack_offset(spec.get("stack_offset", 0), lambda: main(spec))
    # The handlers log to stdout, as on Lambda: the result is the last line.
    print(json.dumps(outcome), flush=True)
