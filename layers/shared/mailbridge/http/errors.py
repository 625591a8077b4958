"""The one mapping from the service's errors to HTTP: `STATUS` gives each error code its
status, and `error_response` shapes every error the same way:
`{"error": {"code", "message", "field"?, "hint"?, "errors"?}}`, with `Retry-After` where it
applies.

Also used by the OAuth callback's page and by request validation (pydantic's errors become
`invalid_field`, `unknown_field` or `missing_field`, naming the field).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.shared.json_encoder import Encoder

from ..core.errors import ErrorCode, InvalidField, InvalidFields, MailbridgeError
from ..core.observability import logger
from ..core.types import CONNECTION_METHODS

_C = ErrorCode
STATUS: dict[ErrorCode, int] = {
    # The request itself
    _C.INVALID_JSON: 400,
    _C.UNAUTHORIZED: 401,
    _C.ADMIN_REQUIRED: 403,
    _C.NOT_FOUND: 404,
    _C.AGENT_NOT_FOUND: 404,
    _C.CLIENT_ORG_NOT_FOUND: 404,
    _C.CLIENT_ORG_MISSING: 409,
    _C.OAUTH_APP_NOT_FOUND: 404,
    _C.MESSAGE_NOT_FOUND: 404,
    _C.FOLDER_NOT_FOUND: 404,
    _C.ATTACHMENT_NOT_FOUND: 404,
    _C.AGENT_TOKEN_NOT_ALLOWED: 403,
    _C.PAYLOAD_TOO_LARGE: 413,
    _C.UNSUPPORTED_MEDIA_TYPE: 415,
    _C.INVALID_FIELD: 422,
    _C.UNKNOWN_FIELD: 422,
    _C.MISSING_FIELD: 422,
    _C.RECIPIENTS_NOT_ALLOWED: 422,
    _C.IDEMPOTENCY_KEY_REUSED: 422,
    _C.ATTACHMENT_TOO_LARGE: 413,
    _C.NOTIFICATION_INVALID: 400,  # not one of Gmail's or Graph's notifications
    # What is stored does not allow it
    _C.NOT_CONFIGURED: 409,
    _C.NOT_OAUTH: 409,
    _C.NOT_AUTHORIZED: 409,
    _C.CONCURRENT_UPDATE: 409,
    _C.SECRET_MISSING: 409,
    _C.VERSION_MISMATCH: 412,
    _C.RATE_LIMITED: 429,
    _C.SENDING_LIMIT_REACHED: 429,
    _C.REQUEST_IN_PROGRESS: 409,
    # Our side
    _C.INTERNAL_ERROR: 500,
    _C.STORAGE_UNAVAILABLE: 503,
    _C.TOKEN_REFRESH_BUSY: 503,
    _C.OAUTH_NOT_CONFIGURED: 503,
    # The OAuth callback refused (its page has the status)
    _C.STATE_INVALID: 400,
    _C.STATE_EXPIRED: 400,
    _C.AUTHORIZATION_OUTDATED: 409,
    _C.ACCOUNT_MISMATCH: 409,
    # The connection's account or app must be fixed first
    _C.REAUTHORIZATION_REQUIRED: 409,
    _C.OAUTH_CLIENT_INVALID: 409,
    _C.PERMISSION_MISSING: 409,
    _C.SEND_PERMISSION_MISSING: 409,
    _C.AUTHORIZATION_DENIED: 409,
    _C.AUTHORIZATION_FAILED: 409,
    _C.OAUTH_APP_MISSING: 409,
    _C.OAUTH_APP_REMOVED: 409,
    _C.EMAIL_DOMAIN_NOT_ALLOWED: 409,
    _C.TENANT_UNKNOWN: 422,
    _C.AUTH_FAILED: 409,
    _C.AUTH_UNAVAILABLE: 409,
    _C.ADDRESS_NOT_ALLOWED: 409,
    _C.RECIPIENTS_REFUSED: 422,
    _C.MESSAGE_REFUSED: 422,
    # The provider or mail server asks to slow down: retry after Retry-After
    _C.PROVIDER_THROTTLED: 429,
    _C.SERVER_BUSY: 429,
    # A provider or mail server failed
    _C.PROVIDER_ERROR: 502,
    _C.SUBSCRIPTION_REFUSED: 502,  # Graph could not validate our route
    _C.TIMEOUT: 502,
    _C.CONNECTION_FAILED: 502,
    _C.TLS_CERTIFICATE_INVALID: 502,
    _C.CONNECTION_REFUSED: 502,
    _C.DNS_FAILURE: 502,
    _C.TLS_HANDSHAKE_FAILED: 502,
    _C.STARTTLS_UNAVAILABLE: 502,
    _C.SERVER_ERROR: 502,
    # New mail: a Gmail push refused; a watch refused for the topic
    _C.PUSH_UNAUTHORIZED: 401,
    _C.PUSH_TOPIC_REFUSED: 502,
}


def utf8_json(value: Any) -> str:
    """UTF-8 rather than escapes: a message's text costs up to 4 bytes a character, not
    12, within Lambda's 6 MB response. A lone surrogate (which a sender's bad encoding can
    leave in a string, or a request's field name) has no UTF-8: it becomes "?" rather than
    an answer that cannot be sent."""
    text = json.dumps(value, separators=(",", ":"), cls=Encoder, ensure_ascii=False)
    return text.encode("utf-8", "replace").decode("utf-8")


def _detail(error: MailbridgeError) -> dict[str, str]:
    detail = {
        "code": error.code,
        "message": error.message,
        "field": error.field,
        "hint": error.hint,
    }
    return {name: value for name, value in detail.items() if value is not None}


def error_body(error: MailbridgeError) -> str:
    """The one error shape, `http.models.ErrorResponse` (the contract's), without a model:
    an error answered at a first request builds no validator."""
    detail: dict[str, Any] = _detail(error)
    if isinstance(error, InvalidFields):
        detail["errors"] = [_detail(problem) for problem in error.problems]
    return utf8_json({"error": detail})


def error_response(error: MailbridgeError) -> Response[str]:
    status = STATUS[error.code]
    if status < 500:
        logger.info("request refused", extra={"error_code": error.code, "status": status})
    else:
        # The cause's type says which dependency failed; its text is not logged (it could
        # quote a request).
        cause = type(error.__cause__).__name__ if error.__cause__ else None
        logger.warning(
            "request failed", extra={"error_code": error.code, "status": status, "cause": cause}
        )
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=error_body(error),
        headers=headers,
    )


def invalid_json() -> MailbridgeError:
    return MailbridgeError(ErrorCode.INVALID_JSON, "The request body is not valid JSON.")


def validation_error(error: RequestValidationError) -> MailbridgeError:
    """pydantic's complaints about the request, one per field, naming the field (never the
    value)."""
    found = error.errors()
    if any(each["type"] == "json_invalid" for each in found):
        return invalid_json()
    if any(each["type"] in {"union_tag_not_found", "union_tag_invalid"} for each in found):
        # Which fields a body needs depends on its provider: nothing more can be said.
        return InvalidField("provider", "provider must be one of imap, microsoft, google.")
    problems: dict[str, MailbridgeError] = {}
    for each in found:
        problem = _field_problem(each)
        problems.setdefault(str(problem.field), problem)  # a field's first complaint
    listed = list(problems.values())
    return listed[0] if len(listed) == 1 else InvalidFields(listed)


def _field_problem(error: Any) -> MailbridgeError:
    # loc is ("body", "imap", "port") or ("path", "agentId"): name the field, not the source.
    # A body that is a union by provider has the provider after "body": not a field either.
    # A parameter is one field, after which pydantic may name the member of its type's
    # union that failed ("str", "function-after[...]").
    loc = [str(part) for part in error["loc"]]
    if len(loc) > 2 and loc[0] == "body" and loc[1] in CONNECTION_METHODS:
        del loc[1]
    elif len(loc) > 2 and loc[0] != "body":
        del loc[2:]
    field = ".".join(loc[1:]) or loc[0]
    if error["type"] == "extra_forbidden":
        code, message = ErrorCode.UNKNOWN_FIELD, f"{field} is not a known field."
    elif error["type"] == "missing":
        code, message = ErrorCode.MISSING_FIELD, f"{field} is required."
    elif error["type"] == "string_pattern_mismatch":
        # The pattern itself says nothing to a person.
        code, message = ErrorCode.INVALID_FIELD, f"{field} is not in the form it must have."
    else:
        # pydantic's `msg` describes the rule, never the rejected value (which may be secret);
        # a validator of ours words it itself.
        rule = str(error["msg"]).removeprefix("Value error, ").rstrip(".")
        code, message = ErrorCode.INVALID_FIELD, f"{field}: {rule}."
    return MailbridgeError(code, message, field=field)
