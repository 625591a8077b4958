"""Organization-wide email settings: shared OAuth apps (of an org or of one of its client
organizations) and client organizations' email policies. Admins write; members read."""

from collections.abc import Callable
from typing import Annotated, TypeVar

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from mailbridge.core.observability import logger
from mailbridge.core.types import ID_PATTERN, OAuthProvider
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import current_caller
from mailbridge.http.contract import JWT, errors, success
from mailbridge.orgs.admin_models import EmailPolicyRequest, SharedAppRequest, SharedAppView
from mailbridge.orgs.client_orgs import delete_email_policy, get_email_policy, save_email_policy
from mailbridge.orgs.records import AppOwner, ClientOrg
from mailbridge.orgs.shared_apps import delete_shared_app, get_shared_app, save_shared_app
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore

app = create_app()
secrets, orgs = SecretsManagerStore(), DynamoOrgStore()

Provider = Annotated[OAuthProvider, Path()]
APPS, POLICIES = ["Shared OAuth apps"], ["Client organizations"]
# Members read; writes need an admin (403).
READ_ERRORS = errors(401, 404, 422, 503)
WRITE_ERRORS = errors(401, 403, 404, 409, 422, 503)
DELETE_ERRORS = errors(401, 403, 404, 422, 503)
DELETED = success("Deleted.", status=204)
Route = TypeVar("Route", bound=Callable[..., object])


def _deleted(what: str) -> Response[str]:
    logger.info(f"{what} deleted")
    return Response(status_code=204, body="")


def _named(name: str) -> Callable[[Route], Route]:
    """Each owner's routes keep a name of their own: it is their OpenAPI operation id."""

    def rename(route: Route) -> Route:
        route.__name__ = name
        return route

    return rename


def shared_app_routes(owner: AppOwner, id_parameter: str, whose: str) -> Router:
    """GET, PUT and DELETE of a shared app, written once for both owners: an organization
    and a client organization. `id_parameter` is the owner id's name in the path (it names
    the parameter in the contract too); `whose` names the owner in summaries."""
    router = Router()  # type: ignore[no-untyped-call]  # its __init__ is not annotated
    # Organization ids come from the platform, like agent ids, and follow the same rule.
    OwnerId = Annotated[str, Path(pattern=ID_PATTERN, alias=id_parameter)]
    path = "/email-oauth-apps/<provider>"

    @router.get(
        path,
        summary=f"{whose.capitalize()}'s shared app for the provider, without its secret",
        tags=APPS,
        security=JWT,
        responses=success("The app.") | READ_ERRORS,
    )
    @_named(f"get_{owner}_app")
    def get_app(owner_id: OwnerId, provider: Provider) -> SharedAppView:
        return get_shared_app(orgs, current_caller(app), owner, owner_id, provider)

    @router.put(
        path,
        summary=f"Register or replace {whose}'s shared app",
        tags=APPS,
        security=JWT,
        responses=success("The saved app.") | WRITE_ERRORS,
    )
    @_named(f"put_{owner}_app")
    def put_app(
        owner_id: OwnerId, provider: Provider, request: Annotated[SharedAppRequest, Body()]
    ) -> SharedAppView:
        caller = current_caller(app)
        return save_shared_app(orgs, secrets, caller, owner, owner_id, provider, request)

    @router.delete(
        path,
        summary="Remove it; agents that used it go to `error`",
        tags=APPS,
        security=JWT,
        responses=DELETED | DELETE_ERRORS,
    )
    @_named(f"delete_{owner}_app")
    def delete_app(owner_id: OwnerId, provider: Provider) -> Response[str]:
        delete_shared_app(orgs, secrets, current_caller(app), owner, owner_id, provider)
        return _deleted("shared oauth app")

    return router


app.include_router(
    shared_app_routes("org", "orgId", "the organization"), prefix="/bridge/orgs/<orgId>"
)
app.include_router(
    shared_app_routes("client_org", "clientOrgId", "a client organization"),
    prefix="/bridge/client-orgs/<clientOrgId>",
)

ClientOrgId = Annotated[str, Path(pattern=ID_PATTERN)]
POLICY = "/bridge/client-orgs/<clientOrgId>/email-policy"


@app.get(
    POLICY,
    summary="A client organization and its email policy",
    tags=POLICIES,
    security=JWT,
    responses=success("The policy.") | READ_ERRORS,
)
def get_policy(clientOrgId: ClientOrgId) -> ClientOrg:
    return get_email_policy(orgs, current_caller(app), clientOrgId)


@app.put(
    POLICY,
    summary="Create or replace it; the first save makes the client organization yours",
    tags=POLICIES,
    security=JWT,
    responses=success("The saved policy.") | WRITE_ERRORS,
)
def put_policy(
    clientOrgId: ClientOrgId, request: Annotated[EmailPolicyRequest, Body()]
) -> ClientOrg:
    return save_email_policy(orgs, current_caller(app), clientOrgId, request)


@app.delete(
    POLICY,
    summary="Remove the client organization's policy",
    tags=POLICIES,
    security=JWT,
    responses=DELETED | DELETE_ERRORS,
)
def delete_policy(clientOrgId: ClientOrgId) -> Response[str]:
    delete_email_policy(orgs, secrets, current_caller(app), clientOrgId)
    return _deleted("email policy")


handler = lambda_handler(app)
