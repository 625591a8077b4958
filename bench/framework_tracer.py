"""The framework floor plus Powertools' Tracer: the AWS X-Ray SDK and, with tracing on (on
Lambda, unless turned off), its patching of botocore, requests and sqlite3, which imports
them. Imported by the benchmark's probe."""

from aws_lambda_powertools import Tracer

from . import framework_floor  # noqa: F401 - the floor is part of this measurement

tracer = Tracer()
