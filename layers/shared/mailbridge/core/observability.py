"""Logging and metrics (Powertools), shared by the handlers and the domain.

No Powertools Tracer: Lambda's active tracing (template.yaml) records every invocation, its
cold start included, without the X-Ray SDK, which would cost each cold start about 30 ms and
bring a botocore of its own into the layer, shadowing the runtime's (BENCHMARKS.md)."""

from __future__ import annotations

import logging
import os
import warnings
from traceback import extract_tb

from aws_lambda_powertools import Logger, Metrics

logger = Logger()


class _RedactSecrets(logging.Filter):
    """The second line of defence: a log call that passes a secret by a known name (by
    mistake: nothing here does) has it replaced before any handler writes it. (`code` is an
    OAuth authorization code; error codes are logged as `error_code`.)"""

    FIELDS = frozenset(
        {
            "password",
            "client_secret",
            "access_token",
            "refresh_token",
            "id_token",
            "token_cache",
            "code",
            "code_verifier",
            "authorization",
            "secret",
            "state",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        for name in self.FIELDS & record.__dict__.keys():
            setattr(record, name, "[redacted]")
        return True


logger.addFilter(_RedactSecrets())
metrics = Metrics()
# Two stacks in one account (development and production) count apart: each stack's alarms
# watch its own. Read as Lambda sets it, before the settings are validated.
if os.environ.get("STACK_NAME"):
    metrics.set_default_dimensions(stack=os.environ["STACK_NAME"])
# Most requests record no business metric; Powertools would warn about it on every one.
warnings.filterwarnings("ignore", "No application metrics to publish")


def log_unexpected(error: BaseException) -> None:
    """An exception nothing expected: its type and where it happened, never its text (which
    could quote a request, or a secret: an encoder naming a password's character, say)."""
    stack = [f"{f.filename}:{f.lineno} in {f.name}" for f in extract_tb(error.__traceback__)]
    logger.error("unexpected error", extra={"error_type": type(error).__name__, "stack": stack})
