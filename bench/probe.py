"""One cold-start measurement, run in a fresh interpreter by `imports.measure_imports`:
`python -m mailbridge_bench.probe module NAME` or `... handler FUNCTION CODE_URI HANDLER`.

Prints one JSON line: the import's wall time and the process's peak RSS. Standard library
only (the handler loader too), so that nothing but the measured import is counted.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

from mailbridge_tools.functions import load_function_module


def main(argv: list[str]) -> None:
    kind, *target = argv
    started = time.perf_counter()
    if kind == "module":
        (name,) = target
        importlib.import_module(name)
    elif kind == "handler":
        function, code_uri, handler = target
        load_function_module(function, Path(code_uri), handler)
    else:
        raise SystemExit(f"unknown probe kind {kind!r}")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss": _peak_rss()}))


def _peak_rss() -> int:
    """This process's peak resident set, in bytes. Not getrusage's ru_maxrss: Linux carries
    the parent's peak into it across fork and exec, so it would measure the benchmark."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # in kB
    raise RuntimeError("no VmHWM in /proc/self/status: the probe needs Linux")


if __name__ == "__main__":
    main(sys.argv[1:])
