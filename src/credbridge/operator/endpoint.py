"""The workload read endpoint: Pods read a Credential's values with their ServiceAccount token, over TLS.

This is the shell around core.workload: it gathers the answers the decision needs (TokenReview and
SubjectAccessReview from the API server, Credentials and their managed Secrets from the
controller's watch cache, CredentialBindings from the binding controller's) and turns the decision
into an HTTP response.

It runs in a thread of its own, with its own event loop, API connection pool and worker threads, so
a flood of reads (answered 429 by the per-identity rate limit, core.ratelimit) competes with
reconciling only for CPU, never for kopf's event loop or the controller's API connections. Repeated
tokens are reviewed once per `token_review_ttl` (core.reviewcache), and concurrent requests with a
token being reviewed wait for that one review instead of starting their own.

Every read is counted (`credbridge_workload_reads_total{namespace,kind,result}`) and logged with
the identity, the object and the result — never the token, never a value.

The same server answers `GET /v1/sealing-keys` (JSON) and `GET /v1/sealing-keys/cert.pem` without
authentication: the sealing public keys are public, and `credbridge seal` needs them before it has
anything else. They are served here rather than on the plain-HTTP health or metrics ports because
this server speaks TLS: a public key needs no secrecy, but it does need integrity — a key swapped
in transit would have values sealed to someone else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import pathlib
import ssl
import tempfile
import threading
import time
import typing
from collections.abc import Callable
from typing import Any

import kopf
from aiohttp import web

from credbridge import tls
from credbridge.core import (
    binding,
    keyring,
    names,
    planning,
    ratelimit,
    release,
    reviewcache,
    workload,
)
from credbridge.kube import connecting, errors, fetching, reviewing
from credbridge.operator import cache as cache_module
from credbridge.operator import metrics, reading
from credbridge.operator import settings as settings_module

logger = logging.getLogger("credbridge.endpoint")

Json = dict[str, Any]
Key = tuple[str, str]

SEALING_KEYS_PATH = "/v1/sealing-keys"
"""Unauthenticated: the sealing public keys as JSON (`activeKeyId`, `cert.pem`, `<keyId>.pem`)."""
SEALING_CERT_PATH = "/v1/sealing-keys/cert.pem"
"""Unauthenticated: the active sealing public key as PEM, what `credbridge seal --fetch-cert` saves."""


@dataclasses.dataclass(frozen=True)
class Sources:
    """What the endpoint reads from the rest of the operator."""

    cache: cache_module.Cache
    """The controller's watch cache: Credentials, managed Secrets, and the CredentialBindings store."""
    keyring: Callable[[], keyring.Keyring | None]
    release_policy: release.Policy


@dataclasses.dataclass(frozen=True)
class ServingCertificate:
    certfile: str
    pkeyfile: str
    ca_pem: str | None
    """The CA that signed the certificate (given to injected Pods); None: a public CA, use system trust."""
    cafile: str | None = None
    """Where that CA is as a file (for `credbridge env --ca-file`), when there is one."""


def serving_certificate(settings: settings_module.EndpointSettings) -> ServingCertificate:
    """The certificate from outside (the chart), or one issued by a CA made here (development, tests)."""
    if settings.certfile and settings.pkeyfile:
        bundle = pathlib.Path(settings.cafile).read_text() if settings.cafile else None
        return ServingCertificate(settings.certfile, settings.pkeyfile, bundle, settings.cafile)
    directory = pathlib.Path(tempfile.mkdtemp(prefix="credbridge-endpoint-"))
    ca = tls.make_ca("credbridge-endpoint-ca")
    certfile, pkeyfile = tls.issue(ca, settings.host, hosts=[settings.host]).write(directory, "serving")
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    return ServingCertificate(str(certfile), str(pkeyfile), ca.cert_pem.decode(), str(directory / "ca.crt"))


class ReadEndpoint:
    """The HTTPS server of workload reads, in its own thread."""

    def __init__(
        self,
        settings: settings_module.EndpointSettings,
        api: Any,
        sources: Sources,
        *,
        bind_address: str,
    ) -> None:
        """`api` is an ApiClient of its own (its connection pool serves only reviews and fallback reads)."""
        self.settings = settings
        self.api = api
        self.sources = sources
        self.reader = reading.Reader(api, sources.cache, sources.keyring)
        """The one reader of plaintext, on the endpoint's own connection pool."""
        self.certificate = serving_certificate(settings)
        external = bool(settings.certfile and settings.pkeyfile)
        self.listen_host = bind_address if external else settings.host
        self.url = settings.url or f"https://{settings.host}:{settings.port}"
        self.limiter = ratelimit.RateLimiter(settings.reads_per_second, settings.burst)
        self.reviews = reviewcache.ReviewCache(settings.token_review_ttl, settings.token_cache_size)
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="credbridge-read")
        self._pending: dict[str, asyncio.Future[reviewcache.TokenReview]] = {}
        """Token hash → the TokenReview in flight for it, which concurrent requests with that token await."""
        self._review_slots = asyncio.Semaphore(settings.workers)
        """Bounds the TokenReviews asked at once, whatever the number of distinct tokens presented."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="credbridge-read-endpoint", daemon=True)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; raise RuntimeError naming the port when the server cannot listen."""
        self._thread.start()
        self._started.wait(timeout)
        if self._failure is not None:
            raise RuntimeError(
                f"the read endpoint cannot listen on {self.listen_host}:{self.settings.port}: {self._failure}"
            )
        logger.info(
            "read endpoint listening on %s:%d, serving %s (rate %g/s, burst %d per identity); its CA: %s",
            self.listen_host,
            self.settings.port,
            self.url,
            self.settings.reads_per_second,
            self.settings.burst,
            self.certificate.cafile or "a public CA (the system trust store)",
        )

    def alive(self) -> bool:
        """Tells whether the server thread still runs (the liveness probe asks)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by start(); the thread must not die silently
            self._failure = error
            self._started.set()
            logger.error("the read endpoint stopped: %s", error)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate.certfile, self.certificate.pkeyfile)
        app = web.Application()
        app.router.add_get(SEALING_KEYS_PATH, self.sealing_keys)
        app.router.add_get(SEALING_CERT_PATH, self.sealing_keys)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.listen_host, self.settings.port, ssl_context=context, backlog=1024)
            await site.start()
            self._started.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # ---- the sealing public keys (no authentication) -----------------------------------------

    async def sealing_keys(self, request: web.Request) -> web.Response:
        """The published sealing public keys: JSON, or the active key's PEM for the cert path."""
        ring = self.sources.keyring()
        published = keyring.published_sealing_keys(ring) if ring is not None else {}
        if not published:
            return web.json_response(
                {"error": "the operator has no sealing key yet: see its log and the keyring Secret"}, status=503
            )
        if request.path == SEALING_CERT_PATH:
            return web.Response(text=published[names.SEALING_CERT_KEY], content_type="application/x-pem-file")
        return web.json_response(published)

    # ---- one request -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            answer, namespace, kind, who, what = await self._answer(request)
        except Exception as error:
            # A bug, not a refusal: answer 500 and log the exception's class only — its message or
            # traceback could quote whatever the failing code held.
            logger.error("workload read failed with %s", type(error).__name__)
            answer = workload.refusal(500, "error", "the operator failed to answer: see its log")
            namespace, kind, who, what = "", "", "(unknown)", "a request"
        elapsed = time.perf_counter() - started
        metrics.WORKLOAD_READS.labels(namespace, kind, answer.result).inc()
        metrics.WORKLOAD_READ_SECONDS.labels(answer.result).observe(elapsed)
        level = logging.DEBUG if answer.result == "rate_limited" else logging.INFO
        logger.log(level, "workload read of %s by %s: %s (HTTP %d)", what, who, answer.result, answer.status)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def _answer(self, request: web.Request) -> tuple[workload.Answer, str, str, str, str]:
        """The answer, and the namespace label, kind, identity and object for the metric and the log."""
        path = request.path
        target = workload.parse_path(path)
        if isinstance(target, workload.Answer):
            return target, "", "", "(not authenticated)", "an unknown path"
        what = str(target)
        if request.method != "GET":
            return (
                workload.refusal(405, "bad_request", "only GET reads values"),
                "",
                target.kind,
                "(not authenticated)",
                what,
            )
        token = workload.bearer_token(request.headers.get("Authorization"))
        if token is None:
            return workload.no_token(), "", target.kind, "(no token)", what
        try:
            review = await self._review(token)
        except errors.ApiError as error:
            logger.warning("workload read: %s", error)
            return workload.review_unavailable("TokenReview"), "", target.kind, "(not reviewed)", what
        identity = workload.authenticate(review)
        if isinstance(identity, workload.Answer):
            who = review.identity.username if review.identity else "(token refused)"
            return identity, "", target.kind, who, what
        wait = self.limiter.take(identity.username, time.monotonic())
        if wait > 0:
            answer = workload.rate_limited(identity, wait, self.settings.reads_per_second)
            return answer, target.namespace, target.kind, identity.username, what
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._pool, self._authorized_read, identity, target)
        return answer, target.namespace, target.kind, identity.username, what

    async def _review(self, token: str) -> reviewcache.TokenReview:
        """TokenReview of `token`: from the cache, from a review in flight, or asked now (one at a time per token)."""
        key = reviewcache.token_key(token)
        cached = self.reviews.get(key, time.time())
        if cached is not None:
            metrics.TOKEN_REVIEWS.labels("cached").inc()
            return cached
        pending = self._pending.get(key)
        if pending is not None:
            metrics.TOKEN_REVIEWS.labels("shared").inc()
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[reviewcache.TokenReview] = loop.create_future()
        self._pending[key] = future
        try:
            async with self._review_slots:
                review = await loop.run_in_executor(self._pool, self._review_now, token)
        except BaseException as error:
            metrics.TOKEN_REVIEWS.labels("error").inc()
            future.set_exception(error)
            future.exception()  # waiters re-raise it; without waiters it must not be reported as unretrieved
            raise
        finally:
            self._pending.pop(key, None)
        metrics.TOKEN_REVIEWS.labels("reviewed").inc()
        self.reviews.put(key, review, time.time(), reviewcache.token_expiry(token))
        future.set_result(review)
        return review

    def _review_now(self, token: str) -> reviewcache.TokenReview:
        return reviewing.review_token(self.api, token, (names.TOKEN_AUDIENCE,))

    # ---- after authentication (worker threads) -----------------------------------------------

    def _authorized_read(self, identity: reviewcache.Identity, target: workload.Target) -> workload.Answer:
        try:
            allowed = reviewing.may_use(self.api, identity, target.namespace, target.plural, target.name)
        except errors.ApiError as error:
            logger.warning("workload read: %s", error)
            return workload.review_unavailable("SubjectAccessReview")
        if not allowed:
            return workload.forbidden(identity, target)
        bound: binding.BindingView | None = None
        credential_target = target
        if target.plural == names.CREDENTIAL_BINDING_PLURAL:
            bound = self._binding(target)
            if bound is None:
                return workload.forbidden(identity, target)
            credential_target = workload.binding_credential(bound)
        try:
            # A standby replica's cache is not fed: the reader asks the API server for what it lacks.
            credential = self.reader.credential((credential_target.namespace, credential_target.name))
            source = None
            if credential is not None and credential.shared_from is not None:
                source = self.reader.credential(credential.shared_from)
            decision = workload.release_credential(
                identity, credential_target, target, credential, source, self.sources.release_policy
            )
            if isinstance(decision, workload.Answer):
                return decision
            fields = self.reader.open(decision.credential)
        except errors.ApiError as error:
            logger.warning("workload read: %s", error)
            return workload.review_unavailable("read of the Credential")
        if isinstance(fields, planning.Failure):
            return workload.not_openable(decision.credential)
        values = fields
        if bound is not None:
            where = f"Credential {decision.credential.namespace}/{decision.credential.name}"
            try:
                values = workload.render_binding(bound, fields, where=where)
            except ValueError as error:
                return workload.not_renderable(target, str(error))
        return workload.values_answer(target, values, credential=decision.credential)

    def _binding(self, target: workload.Target) -> binding.BindingView | None:
        """The binding from the watch cache's store; read from the API server when the cache lacks it."""
        key = (target.namespace, target.name)
        store = self.sources.cache.stores.get(names.CREDENTIAL_BINDING_PLURAL)
        cached = store.get(key) if store is not None else None
        if cached is not None:
            return typing.cast(binding.BindingView, cached)
        body = fetching.read_credential_binding(self.api, *key)
        return binding.BindingView.from_object(body) if body is not None else None


def start(
    settings: settings_module.OperatorSettings, sources: Sources, registry: kopf.OperatorRegistry
) -> ReadEndpoint | None:
    """Start the read endpoint (None when `--endpoint-port 0`), with a liveness probe for its thread."""
    if settings.endpoint.port <= 0:
        return None
    endpoint = ReadEndpoint(
        settings.endpoint, connecting.api_client(), sources, bind_address=settings.serving.bind_address
    )

    @kopf.on.probe(id="read-endpoint", registry=registry)
    def read_endpoint_alive(**_: Any) -> str:
        # /healthz fails (and the kubelet restarts the Pod) when the endpoint's thread has died.
        if not endpoint.alive():
            raise RuntimeError("the read endpoint stopped serving")
        return "serving"

    endpoint.start()
    return endpoint
