"""The error bodies' contract: ours, and API Gateway's own. `http.errors.error_body` writes
ours; the OpenAPI document's generator describes both from these models, which no function
loads (`http.contract.errors` refers to them by name)."""

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from ..core.types import Model


class ErrorDetail(Model):
    code: str = Field(description="Stable and machine-readable: see docs/api.md, Errors.")
    message: str = Field(description="A sentence for the person in the Email tab.")
    # Left out of the body when there is none, so the contract never offers null.
    field: str | SkipJsonSchema[None] = Field(
        default=None, description="The request field at fault, dotted (`imap.port`)."
    )
    hint: str | SkipJsonSchema[None] = Field(default=None, description="How to fix it.")
    errors: list["ErrorDetail"] | SkipJsonSchema[None] = Field(
        default=None,
        description="A request that breaks several rules: each, with its field (the first is "
        "this error).",
    )


class ErrorResponse(Model):
    """Every error the functions answer."""

    error: ErrorDetail


class GatewayError(Model):
    """What API Gateway answers by itself, before any function runs (a missing or invalid
    token, a body over its 10 MB limit)."""

    message: str
