"""Starting the operator: preflight (identity, keyring, built-in types), then kopf with our handlers.

The preflight runs before kopf so that a fatal problem — a malformed keyring above all — stops the
process with one clear message and a non-zero exit code, before any Credential is touched.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import secrets
import sys
import tempfile
import threading
from typing import Any

import kopf

from credbridge import tls
from credbridge.core import injection, keyring, names, registry
from credbridge.kube import builtins, connecting, errors, fetching, keyrings
from credbridge.operator import consumers, handlers, injecting, keyring_guard, metrics, sealingkeys, webhook_server
from credbridge.operator import controller as controller_module
from credbridge.operator import endpoint as endpoint_module
from credbridge.operator import settings as settings_module

logger = logging.getLogger("credbridge")

EXIT_KEYRING = 2
EXIT_ENDPOINT = 3


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the object kopf names)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        k8s = getattr(record, "k8s_ref", None)
        if isinstance(k8s, dict):
            entry["object"] = {key: k8s.get(key) for key in ("namespace", "name", "kind") if k8s.get(key)}
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry)


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP client logs request and response bodies at debug level; bodies hold Secret data.
    for noisy in ("urllib3", "kubernetes.client.rest", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if level.lower() != "debug":
        # kopf reports every successful handler call at info level: noise at our event rate.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf_objects = logging.getLogger("kopf.objects")
    if not any(isinstance(existing, handlers.QuietRefusals) for existing in kopf_objects.filters):
        kopf_objects.addFilter(handlers.QuietRefusals())


def _webhook_server(
    settings: settings_module.AdmissionSettings, bind_address: str
) -> tuple[webhook_server.WebhookServer, bool]:
    """The webhook server, and whether the operator manages its ValidatingWebhookConfiguration itself.

    With a certificate from outside (the chart) the server listens on `bind_address`, like the
    health and metrics endpoints: the API server reaches the Pod through its Service.
    """
    if settings.certfile and settings.pkeyfile:
        return webhook_server.WebhookServer(
            addr=bind_address,
            port=settings.port,
            certfile=settings.certfile,
            pkeyfile=settings.pkeyfile,
        ), False
    # Self-managed (development, tests): our own CA and a serving certificate for the host, made
    # with `cryptography` because kopf's self-signing path breaks on OpenSSL 3.
    directory = pathlib.Path(tempfile.mkdtemp(prefix="credbridge-webhook-"))
    ca = tls.make_ca("credbridge-webhook-ca")
    certfile, pkeyfile = tls.issue(ca, settings.host, hosts=[settings.host]).write(directory, "serving")
    server = webhook_server.WebhookServer(
        addr=settings.host,
        port=settings.port,
        host=settings.host,
        certfile=str(certfile),
        pkeyfile=str(pkeyfile),
        cadata=ca.cert_pem,
    )
    return server, True


def load_types(api: connecting.ApiClient) -> registry.Registry:
    """Apply the built-in types to the cluster and return them with the cluster's custom types.

    Custom types are known from the start, so a standby replica's webhook accepts them too.
    """
    types = registry.Registry.builtin()
    in_cluster = fetching.list_credential_types(api)
    builtins.sync(api, types.builtins, in_cluster)
    for obj in in_cluster:
        if (obj.get("spec") or {}).get("name") not in types.builtins:
            try:
                types = types.with_custom(registry.type_from_object(obj))
            except registry.TypeDefinitionError as error:
                logger.warning("ignoring CredentialType %s: %s", obj["metadata"]["name"], error)
    return types


def kopf_settings_for(settings: settings_module.OperatorSettings) -> kopf.OperatorSettings:
    """kopf's settings: no posting of its own Events, peering only when asked, our webhook server."""
    configured = kopf.OperatorSettings()
    configured.posting.enabled = False  # we post our own Events, only on condition changes
    configured.watching.server_timeout = 300
    # Only the Secrets credbridge writes come through kopf, with their data; every other Secret
    # (Helm releases, service-account tokens...) reaches the operator as metadata only.
    configured.watching.label_selectors["v1", "secrets"] = names.MANAGED_SELECTOR
    configured.peering.standalone = settings.peering is None
    configured.peering.clusterwide = not settings.watch.namespaces
    if settings.peering:
        configured.peering.name = settings.peering
        configured.peering.mandatory = True
        configured.peering.priority = settings.peering_priority
        configured.peering.lifetime = settings.peering_lifetime
    if settings.admission.port > 0:
        server, managed = _webhook_server(settings.admission, settings.serving.bind_address)
        configured.admission.server = server
        configured.admission.managed = "credbridge.io" if managed else None
    return configured


def load_keyring(api: connecting.ApiClient, settings: settings_module.OperatorSettings) -> keyring.Keyring | None:
    """The keyring, created on first start; None (after saying why) when the operator must not start."""
    namespace = settings.watch.operator_namespace
    try:
        return keyrings.ensure(api, namespace, settings.keyring.secret_name, secrets.token_bytes)
    except keyring.KeyringError as error:
        logger.error("refusing to start: %s", error)
        keyring_guard.post_refusal(
            api, keyrings.reference_to(namespace, settings.keyring.secret_name), f"refusing to start: {error}"
        )
    except errors.ApiError as error:
        if error.not_found and fetching.read_namespace(api, namespace) is None:
            logger.error(
                "refusing to start: the operator namespace %s does not exist: create it, or set "
                "--operator-namespace (default: $POD_NAMESPACE)",
                namespace,
            )
        else:
            logger.error(
                "refusing to start: cannot read or create keyring Secret %s/%s (HTTP %s %s)",
                namespace,
                settings.keyring.secret_name,
                error.status,
                error.reason,
            )
    return None


def run(settings: settings_module.OperatorSettings) -> int:
    """Run the operator until SIGTERM/SIGINT; return the process exit code."""
    configure_logging(settings.log_format, settings.log_level)
    api = connecting.api_client()
    operator_username = connecting.whoami(api)
    namespace = settings.watch.operator_namespace
    ring = load_keyring(api, settings)
    if ring is None:
        return EXIT_KEYRING

    controller = controller_module.Controller(api, settings, ring, load_types(api))
    if settings.peering is None:
        # A standby replica (peering) must not act before kopf makes it the active one, so only a
        # standalone operator primes its cache and verifies everything at once; with peering,
        # kopf's first events of the active replica queue the work.
        logger.info("verifying %d existing Credentials", controller.prime())
    kopf_registry = kopf.OperatorRegistry()
    consumers.start_all(controller, kopf_registry)
    controller.start()
    stop_watching = threading.Event()
    sealing_keys = sealingkeys.SealingKeys(api, settings, controller)
    sealing_keys.start(ring)
    guard = keyring_guard.KeyringGuard(api, ring, sealing_keys.keyring_accepted)
    keyrings.watch_changes(api, namespace, settings.keyring.secret_name, guard.observe, stop_watching)
    if settings.serving.metrics_port:
        metrics.serve(settings.serving.metrics_port, settings.serving.bind_address)

    handlers.register(
        kopf_registry, controller, operator_username=operator_username, webhooks=settings.admission.port > 0
    )
    try:
        endpoint = start_workload_reads(settings, controller, kopf_registry)
    except RuntimeError as error:
        logger.error("refusing to start: %s", error)
        stop_watching.set()
        sealing_keys.stop()
        controller.stop()
        return EXIT_ENDPOINT

    @kopf.on.login(registry=kopf_registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same kubeconfig or in-cluster identity as our own client.
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    logger.info(
        "credbridge operator starting as %s: %s, keyring %s/%s (active key %s, active sealing key %s)",
        operator_username,
        "namespaces " + ",".join(settings.watch.namespaces) if settings.watch.namespaces else "all namespaces",
        namespace,
        settings.keyring.secret_name,
        ring.active_id,
        ring.active_sealing_id,
    )
    try:
        kopf.run(
            registry=kopf_registry,
            settings=kopf_settings_for(settings),
            clusterwide=not settings.watch.namespaces,
            namespaces=list(settings.watch.namespaces),
            standalone=settings.peering is None,
            peering_name=settings.peering,
            priority=settings.peering_priority,
            liveness_endpoint=f"http://{settings.serving.bind_address}:{settings.serving.health_port}/healthz",
        )
    finally:
        stop_watching.set()
        sealing_keys.stop()
        if endpoint is not None:
            endpoint.stop()
        controller.stop()
    return 0


def start_workload_reads(
    settings: settings_module.OperatorSettings,
    controller: controller_module.Controller,
    kopf_registry: kopf.OperatorRegistry,
) -> endpoint_module.ReadEndpoint | None:
    """Start the workload read endpoint, and register Pod injection when the webhook server runs too."""
    sources = endpoint_module.Sources(
        cache=controller.cache, keyring=controller.current_keyring, release_policy=controller.release_policy
    )
    endpoint = endpoint_module.start(settings, sources, kopf_registry)
    if endpoint is not None and settings.injection.enabled and settings.admission.port > 0:
        injection_settings = injection.InjectionSettings(
            image=settings.injection.image,
            endpoint_url=endpoint.url,
            ca_pem=endpoint.certificate.ca_pem,
            pull_policy=settings.injection.pull_policy,
        )
        # A configuration kopf manages itself (development) cannot select namespaces, so it must not
        # block Pod creation cluster-wide while the operator is away; the chart's can, and does.
        self_managed = not (settings.admission.certfile and settings.admission.pkeyfile)
        injecting.register(kopf_registry, controller.api, injection_settings, ignore_failures=self_managed)
    return endpoint


def default_operator_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or names.DEFAULT_OPERATOR_NAMESPACE
