"""The whole API on one machine, without Docker: `python -m mailbridge_tools.localapi`.

What SAM deploys, emulated in one process from template.yaml:
- DynamoDB and Secrets Manager: moto's server on loopback; AWS_ENDPOINT_URL points every
  boto3 client there, so the handlers run unchanged (aws).
- API Gateway (HTTP API, payload format 2.0): routes from the functions' HttpApi events, the
  JWT authorizer (tokens from a DevIssuer), the 2.0 event and the response mapping (gateway;
  server is the HTTP in front of it).
- Lambda: each function's handler module, loaded from its CodeUri under a name of its own,
  with the template's environment; as on Lambda, an instance takes one request at a time
  and concurrent requests get instances of their own, each its own load of the module
  (lambda_runtime), so races between requests are real here too.
- IAM: each AWS call a function makes is held to its Policies in the template, and one they
  do not allow fails with AccessDeniedException as in AWS (iam); moto alone allows anything.

All functions share this process's environment, so a variable that two functions would set
to different values is refused rather than guessed. Instances also share the process's
logger and metrics, so under concurrency a log line may carry another request's keys; on
Lambda each instance is a process of its own. Not emulated: Lambda's timeout (the
context reports the time left, nothing stops a slow handler), ANY methods, {proxy+} paths.

Here LocalApi puts them together; web serves the Email tab and the OpenAPI document beside
the API, seed adds the demo agents and cli is the command.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from ..devauth import DevIssuer
from ..template import (
    TEMPLATE_PATH,
    Route,
    function_policy,
    load_template,
    routes,
    table_logical_id,
)
from .aws import ACCOUNT_ID, PARTITION, REGION, set_env, start_aws, table_arn
from .gateway import Gateway, HttpResponse
from .iam import Policy, acting_as, enforce
from .lambda_runtime import LambdaContext, LambdaFunction, lambda_functions, shared_environment
from .server import HttpServer, serve
from .web import WebPages

__all__ = ["HttpResponse", "LambdaContext", "LocalApi"]


class LocalApi:
    """The API served on `host:port` (0: a free port) with its own moto and DevIssuer.

    Use it as a context manager. While it runs, this process's environment is the functions'
    (TABLE_NAME, AWS_ENDPOINT_URL, ...), so code in the same process, such as a test or the
    `seed` hook, reaches the same table; stop() restores the environment.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: Callable[[LocalApi], None] | None = None,
        template_path: Path = TEMPLATE_PATH,
        table_name: str = "mailbridge-local",
        parameters: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.template_path = template_path
        self.table_name = table_name
        # Template parameter values, as `sam deploy --parameter-overrides` gives them.
        self.parameters = parameters or {}
        self.issuer = DevIssuer()
        self.aws_endpoint_url = ""
        self.routes: list[Route] = []
        self._cleanup = ExitStack()
        self._functions: dict[str, LambdaFunction] = {}
        # Called with every response the gateway answers (tests look for secrets in them).
        self.response_observers: list[Callable[[HttpResponse], None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        template = load_template(self.template_path)
        self.routes = routes(template, self.template_path.parent)
        with ExitStack() as stack:
            self.aws_endpoint_url = start_aws(stack, template, self.table_name)
            server = self._bind_http(stack, template)
            table = table_logical_id(template)
            resolved = {
                table: self.table_name,
                f"{table}.Arn": table_arn(self.table_name),
                # The authorizer's settings: the DevIssuer stands in for the platform's.
                "JwtIssuer": self.issuer.issuer,
                "JwtAudience": self.issuer.audience,
                # OAuth providers redirect here, and the Email tab it serves gets the results.
                "PublicBaseUrl": self.url,
                "AllowedUiOrigins": self.url,
                "AWS::Partition": PARTITION,
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT_ID,
                **self.parameters,
            }
            for name, value in shared_environment(template, self.routes, resolved).items():
                set_env(stack, name, value)
            # Each function's execution role, which every AWS call it makes is held to.
            for name, function in self._functions.items():
                statements = function_policy(template, name, resolved)
                function.policy = Policy(name, tuple(statements))
            stack.enter_context(enforce())
            # No CloudWatch here to receive metrics.
            set_env(stack, "POWERTOOLS_METRICS_DISABLED", "true", overwrite=False)
            serve(stack, server)
            if self.seed is not None:
                self.seed(self)
            self._cleanup = stack.pop_all()

    def stop(self) -> None:
        self._cleanup.close()

    def invoke(self, event: dict[str, Any]) -> Any:
        """Runs the function that owns the event's routeKey on the event as given, with no
        authorizer check: what `sam local invoke` does with a file from events/."""
        route = next(r for r in self.routes if r.route_key == event["routeKey"])
        return self._functions[route.function].invoke(event)

    def acting_as(self, function: str) -> AbstractContextManager[None]:
        """The AWS calls made in the block are `function`'s, held to its policy as its own
        code's are: what a function may do can be checked without a route that does it."""
        return acting_as(self._functions[function].policy)

    def __enter__(self) -> LocalApi:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind_http(self, stack: ExitStack, template: dict[str, Any]) -> HttpServer:
        """The listening socket, bound before the environment is set because the
        environment names its URL; requests are served only once it is set."""
        self._functions = lambda_functions(template, self.routes)
        pages = WebPages(self.routes)
        gateway = Gateway(
            self.routes, self._functions, self.issuer, self.response_observers, pages.get
        )
        server = HttpServer((self.host, self.port), gateway)
        stack.callback(server.server_close)
        self.port = server.server_address[1]
        return server
