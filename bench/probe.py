"""One cold-start measurement, run in a fresh interpreter by `imports.measure_imports`:
`python -m mailbridge_bench.probe module NAME` or `... handler FUNCTION CODE_URI HANDLER`.

Prints one JSON line: the import's wall time and the process's peak RSS. Standard library
only, so that nothing but the measured import is counted.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    kind, *target = argv
    started = time.perf_counter()
    if kind == "module":
        (name,) = target
        importlib.import_module(name)
    elif kind == "handler":
        # Imported inside the timed span on purpose: it is what loads the handler on Lambda.
        from mailbridge_tools.functions import load_function_module

        function, code_uri, handler = target
        load_function_module(function, Path(code_uri), handler)
    else:
        raise SystemExit(f"unknown probe kind {kind!r}")
    seconds = time.perf_counter() - started
    # ru_maxrss is in kibibytes on Linux.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_rss": peak_rss}))


if __name__ == "__main__":
    main(sys.argv[1:])
