"""What any handler of the mandated stack pays before a line of our own: boto3, an HTTP API
resolver with validation, a pydantic model, and Powertools' Logger and Metrics.

Imported by the benchmark's probe; the import is the measurement.
"""

import boto3  # noqa: F401 - the runtime's boto3, which every handler imports through storage
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from pydantic import BaseModel


class Body(BaseModel):
    """A model is defined, as every handler's request and response models are: pydantic
    builds its core schema at class creation."""

    name: str


# Instances, as a handler module creates them: part of the cost is in the constructors.
resolver = APIGatewayHttpResolver(enable_validation=True)
logger = Logger()
metrics = Metrics()
