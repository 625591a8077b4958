"""The end of a Lambda instance's init: what its import allocated lives as long as it does."""

import gc
import os


def end_of_init() -> None:
    """Takes everything allocated so far (modules, classes, models, settings) out of the
    cyclic garbage collector's sight, as `gc.freeze` does for a process about to fork.

    A full collection scans every object it tracks: about 55,000 after a handler's import,
    some 20 ms, and the first one falls due within an instance's first requests. After
    this, full collections scan only what requests allocated since: the GET config
    function's first request went from about 281 to 263 ms in make bench's probe, and each
    later full collection is as much cheaper. Called once, by the handler module's last
    statement: an object frozen is never collected, so a request's garbage must not be.

    Only in a process that is one function's instance (Lambda sets its name): the local run
    loads every function into one process, and would freeze one's requests' garbage at
    another's load."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        gc.freeze()
