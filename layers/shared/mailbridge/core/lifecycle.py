"""What a Lambda instance keeps for its life, kept out of the cyclic garbage collector's
sight: what its init allocated, and the AWS clients it makes at first use."""

import gc
import os


def freeze_long_lived() -> None:
    """Freezes everything allocated so far: `gc.freeze` moves it out of the cyclic garbage
    collector's sight, as for a process about to fork.

    Called by the handler module's last statement (its modules, classes, models, settings:
    some 55,000 objects after a handler's import) and by `storage.aws` after making each
    client it keeps (its service model: some 30,000 objects for the first). A collection
    scans every object of its generations, and a full one every object the collector
    tracks; after this, they scan only what was allocated since (docs/benchmarks.md, "Where
    a cold start's time goes"). It freezes everything the collector tracks: a request's
    objects too when a request makes a client, and cyclic garbage not yet collected. The
    collector never collects a frozen object (reference counting still frees one), so cycles
    among them stay for the instance's life: a few objects, once per client and instance.
    Hence it is called at those points only.

    Only in a process that is one function's instance (Lambda sets its name): the local run
    loads every function into one process, and would freeze one's requests' garbage at
    another's load."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        gc.freeze()
