"""The end of a Lambda instance's init: what its import allocated lives as long as it does."""

import gc
import os


def freeze_init() -> None:
    """Freezes everything allocated so far (modules, classes, models, settings): `gc.freeze`
    moves it out of the cyclic garbage collector's sight, as for a process about to fork.

    A full collection scans every object the collector tracks, some 55,000 after a handler's
    import, and the first one falls due within an instance's first requests. After this,
    full collections scan only what requests allocated since (docs/benchmarks.md, "Where a
    cold start's time goes"). Called once, by the handler module's last statement: a frozen
    object is never collected, so a request's garbage must not be; the import's own cyclic
    garbage not yet collected stays for the instance's life (a few objects).

    Only in a process that is one function's instance (Lambda sets its name): the local run
    loads every function into one process, and would freeze one's requests' garbage at
    another's load."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        gc.freeze()
