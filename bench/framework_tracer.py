"""The framework floor plus Powertools' Tracer (the AWS X-Ray SDK, and with tracing on,
its patching of boto3, requests and http.client). Imported by the benchmark's probe."""

from aws_lambda_powertools import Tracer

from . import framework_floor  # noqa: F401 - the floor is part of this measurement

tracer = Tracer()
