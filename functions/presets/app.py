"""GET /bridge/email-presets: the provider preset catalogue."""

from mailbridge.connections.presets import PRESETS
from mailbridge.connections.request_models import PresetList
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.contract import JWT, errors, success

app = create_app()


@app.get(
    "/bridge/email-presets",
    summary="The provider presets: servers, ports and security of each",
    tags=["Email connection"],
    security=JWT,
    responses=success("The catalogue, `custom` included.") | errors(401),
)
def list_presets() -> PresetList:
    return PresetList(presets=list(PRESETS.values()))


handler = lambda_handler(app)
