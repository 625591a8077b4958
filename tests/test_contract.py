"""The API's contract: request bodies are JSON, and anything else is refused in the error
shape, never with a 500."""

from __future__ import annotations

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
