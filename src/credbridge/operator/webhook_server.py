"""The webhook server: kopf's, reading admission requests as large as the API server can send.

kopf builds its aiohttp application without a body limit of its own, so aiohttp's default of
1 MiB applies, and an UPDATE review (new and old object together) of a Credential or Secret of a
few hundred KiB is answered with HTTP 413: the API server then fails the write with an opaque
error, and the operator's own Secret updates retry forever. kopf reads the body in `_serve`, the
one place where a request passes through, so the limit is raised there, per request.
"""

from __future__ import annotations

import aiohttp.web
import kopf

from credbridge.core import admission


class WebhookServer(kopf.WebhookServer):
    """kopf.WebhookServer that accepts admission reviews up to `admission.MAX_REVIEW_BYTES`."""

    @staticmethod
    async def _serve(fn: kopf.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:
        larger = request.clone(client_max_size=admission.MAX_REVIEW_BYTES)
        return await kopf.WebhookServer._serve(fn, larger)
