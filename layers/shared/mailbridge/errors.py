"""The errors the service raises on purpose, each with a stable code and an HTTP status.

`mailbridge.api` turns them (and only them) into `{error: {code, message, field?, hint?}}`.
Messages are written for the person in the Email tab and never carry secrets or raw
provider text.
"""

from __future__ import annotations


class AppError(Exception):
    status = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status or type(self).status
        self.retry_after = retry_after  # seconds; sent as Retry-After
        self.code = code
        self.message = message
        self.field = field
        self.hint = hint


class BadRequest(AppError):
    status = 400


class Unauthorized(AppError):
    status = 401


class Forbidden(AppError):
    status = 403


class NotFound(AppError):
    status = 404


class Conflict(AppError):
    status = 409


class PayloadTooLarge(AppError):
    status = 413


class InvalidField(AppError):
    """Well-formed input that breaks a rule (422), always naming the field."""

    status = 422

    def __init__(self, field: str, message: str, *, hint: str | None = None) -> None:
        super().__init__("invalid_field", message, field=field, hint=hint)


class ServiceUnavailable(AppError):
    """A dependency of ours (DynamoDB, Secrets Manager) failed; the caller may retry."""

    status = 503


class ConfigConflict(Exception):
    """The stored config changed between our read and our conditional write."""


def agent_not_found(agent_id: str) -> NotFound:
    # Also answered for agents of other organizations: their existence is not disclosed.
    return NotFound("agent_not_found", f"No agent {agent_id!r} in your organization.")
