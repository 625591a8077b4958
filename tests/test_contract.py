"""The API's contract: request bodies are JSON, and anything else is refused in the error
shape, never with a 500; a method a path does not declare is answered 405."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from support import Org

# ---- request bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        # Powertools read these as forms, and failed with a 500 without a boundary.
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ],
)
def test_a_body_that_is_not_json_is_refused(org: Org, content_type: str) -> None:
    response = requests.put(
        org.client.base_url + org.config_path,
        data=b'{"provider": "google"}',
        headers={"Authorization": f"Bearer {org.client.token}", "Content-Type": content_type},
        timeout=10,
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_a_body_that_is_not_utf8_is_refused(org: Org) -> None:
    # API Gateway hands such a body over in base64, which Powertools failed to decode (500).
    response = requests.put(
        org.client.base_url + org.config_path,
        data=b'{"provider": "\xe3"}',
        headers={"Authorization": f"Bearer {org.client.token}"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"


# ---- methods --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["TRACE", "QUERY"])
def test_the_local_gateway_answers_any_undeclared_method_with_405(
    local_api: Any, method: str
) -> None:
    # http.server answered 501 for methods it has no handler for.
    response = requests.request(method, f"{local_api.url}/bridge/email-presets", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
