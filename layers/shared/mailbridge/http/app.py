"""The resolver every handler builds, and its Lambda entry point: logging, metrics, the body
checks and the invocation's deadline.

Unexpected exceptions are logged with their type and where they happened, never their text
(which could hold anything), and answered with a generic 500 that carries nothing from them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.logging import correlation_paths

from ..core.deadline import Deadline
from ..core.errors import ErrorCode, MailbridgeError
from ..core.lifecycle import freeze_long_lived
from ..core.observability import log_unexpected, logger, metrics
from ..core.settings import settings
from .caller import caller_of
from .errors import STATUS, error_body, error_response, invalid_json, utf8_json, validation_error

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# What an invocation keeps, after its network exchanges, to record their outcome and answer.
_ANSWER_SECONDS = 3.0


def create_app() -> APIGatewayHttpResolver:
    """A handler's resolver. Validates the deployment's settings first: a wrong one stops
    the instance as it starts, naming the variable."""
    settings()
    app = APIGatewayHttpResolver(enable_validation=True, serializer=utf8_json)

    @app.exception_handler(MailbridgeError)
    def handle_known_error(error: MailbridgeError) -> Response[str]:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    def handle_validation_error(error: RequestValidationError) -> Response[str]:
        return error_response(validation_error(error))

    @app.not_found
    def handle_not_found(_: NotFoundError) -> Response[str]:
        return error_response(MailbridgeError(ErrorCode.NOT_FOUND, "No such route."))

    @app.exception_handler(Exception)
    def handle_unexpected(error: Exception) -> Response[str]:
        log_unexpected(error)
        return error_response(
            MailbridgeError(ErrorCode.INTERNAL_ERROR, "Something went wrong on our side.")
        )

    return app


def _unauthenticated(event: dict[str, Any]) -> MailbridgeError | None:
    """On a route behind the JWT authorizer, a verified token that names no caller (no
    organization, say) is refused before anything else looks at the request: its body is
    never validated nor its route answered for it."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    jwt = authorizer.get("jwt")
    if jwt is None:
        return None  # a public route: the callback, the push routes
    try:
        caller_of(jwt.get("claims") or {})
    except MailbridgeError as error:
        return error
    return None


def _media_type(event: dict[str, Any]) -> str:
    content_type = (event.get("headers") or {}).get("content-type", "")
    return str(content_type).partition(";")[0].strip().lower()


def _content_type_as_powertools_reads_it(event: dict[str, Any]) -> None:
    """Powertools reads a body as JSON only when its Content-Type starts with
    "application/json" as written (a 500 for "Application/JSON", the same media type by RFC
    9110), and an empty body by its type (a 500 for multipart without a boundary): a JSON
    type is written in lower case, and an empty body has none, which a route that takes a
    body answers as missing."""
    headers = event.get("headers") or {}
    if not event.get("body"):
        headers.pop("content-type", None)
    elif _media_type(event) == content_types.APPLICATION_JSON:
        parameters = headers["content-type"].partition(";")[1:]
        headers["content-type"] = content_types.APPLICATION_JSON + "".join(parameters)


def _refused_body(event: dict[str, Any], limit: int) -> MailbridgeError | None:
    """Why the request's body is refused before any parsing, if it is: too large, not JSON
    (Powertools would read a form, and fail on a multipart body without a boundary), not
    UTF-8 (API Gateway passes such a body in base64, which Powertools fails to decode), or
    JSON nested past Python's recursion limit (on which Powertools' parser crashes)."""
    body = event.get("body") or ""
    # In bytes, as sent: base64 carries 3 bytes in 4 characters, UTF-8 up to 4 in one.
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode())
    if size > limit:
        return MailbridgeError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"The request body is larger than {limit} bytes."
        )
    if not body:
        return None
    media_type = _media_type(event)
    if media_type and media_type != content_types.APPLICATION_JSON:
        return MailbridgeError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "The request body must be JSON, sent with Content-Type: application/json.",
        )
    try:
        text = (
            base64.b64decode(body, validate=True).decode("utf-8")
            if event.get("isBase64Encoded")
            else body
        )
        json.loads(text)
    except (binascii.Error, UnicodeDecodeError):
        return invalid_json()
    except RecursionError:
        return MailbridgeError(
            ErrorCode.INVALID_JSON, "The request body is JSON nested too deeply."
        )
    except ValueError:
        pass  # not JSON: the resolver's validation says so
    return None


def lambda_handler(
    app: APIGatewayHttpResolver, *, max_body_bytes: int | None = None
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda entry point for `app`, with logging, metrics, the caller's token checked
    first, the body checks (bodies up to `max_body_bytes`, by default the deployment's
    MAX_BODY_BYTES) and the invocation's deadline. Made by the handler module's last
    statement (tests/test_cold_start.py checks), it also freezes what the instance's init
    allocated (`core.lifecycle.freeze_long_lived`)."""
    limit = max_body_bytes or settings().max_body_bytes

    # clear_state: keys appended for one request never leak into the next one's logs.
    @logger.inject_lambda_context(
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
    )
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        logger.append_keys(path_parameters=event.get("pathParameters"))
        refused = _unauthenticated(event) or _refused_body(event, limit)
        if refused is not None:
            response: dict[str, Any] = {
                "statusCode": STATUS[refused.code],
                "headers": {"Content-Type": content_types.APPLICATION_JSON},
                "body": error_body(refused),
            }
        else:
            _content_type_as_powertools_reads_it(event)
            # Every network exchange of this invocation ends in time to record its outcome
            # and answer: a slow server becomes a `timeout` result, never a Lambda timeout.
            budget = context.get_remaining_time_in_millis() / 1000 - _ANSWER_SECONDS
            with Deadline(budget):
                response = app.resolve(event, context)
        # Addresses, client ids, policies, errors: nothing a shared browser should keep on
        # disk, nor a proxy serve to someone else. (ETag still works for If-Match.)
        response.setdefault("headers", {})["Cache-Control"] = "no-store"
        return response

    freeze_long_lived()
    return handler
