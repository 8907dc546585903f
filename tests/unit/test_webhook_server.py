"""The webhook server reads admission reviews of the largest objects the API server can send.

kopf's server, as it comes, answers 413 above 1 MiB: an UPDATE of a Credential or Secret of a few
hundred KiB then fails with an opaque error. This runs the real server on a local port.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import kopf

from credbridge.core import admission
from credbridge.local import controlplane
from credbridge.operator import webhook_server


def review(size: int) -> bytes:
    """An AdmissionReview whose old and new objects carry `size` bytes each."""
    payload = "a" * size
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "1", "object": {"data": payload}, "oldObject": {"data": payload}},
    }
    return json.dumps(body).encode()


def post(server_class: type[kopf.WebhookServer], body: bytes) -> tuple[int, int]:
    """POST `body` to a running server; return the HTTP status and the body size the handler saw."""
    seen: list[int] = []

    async def handler(request: Any, **_: Any) -> Any:
        seen.append(len(json.dumps(request)))
        return {"response": {"uid": "1", "allowed": True}}

    async def run() -> int:
        port = controlplane.free_port()
        server = server_class(addr="127.0.0.1", port=port, insecure=True)
        serving = server(handler)
        await serving.__anext__()
        try:

            def send() -> int:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/validate", data=body, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        return int(response.status)
                except urllib.error.HTTPError as error:
                    return int(error.code)

            return await asyncio.to_thread(send)
        finally:
            await serving.aclose()

    status = asyncio.run(run())
    return status, (seen[0] if seen else 0)


def test_kopfs_own_server_refuses_a_review_over_one_mebibyte() -> None:
    # The defect this module exists for; if kopf ever raises its limit, this tells us.
    status, _ = post(kopf.WebhookServer, review(600 * 1024))
    assert status == 413


def test_a_review_of_two_objects_at_the_api_servers_request_limit_is_read() -> None:
    body = review(admission.API_SERVER_MAX_REQUEST_BYTES)
    assert len(body) <= admission.MAX_REVIEW_BYTES
    status, seen = post(webhook_server.WebhookServer, body)
    assert status == 200
    assert seen == len(body)


def test_a_review_over_the_limit_is_still_refused() -> None:
    status, _ = post(webhook_server.WebhookServer, b" " * (admission.MAX_REVIEW_BYTES + 1))
    assert status == 413
