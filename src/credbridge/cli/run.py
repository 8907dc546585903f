"""`credbridge run`: start the operator with settings from flags."""

from __future__ import annotations

import argparse
import secrets

from credbridge.core import names
from credbridge.operator import runner
from credbridge.operator import settings as settings_module

# Flag defaults come from the settings dataclasses, where each one is documented once.
_DEFAULTS = settings_module.OperatorSettings()


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the operator",
        description=(
            "Run the credbridge operator: reconcile Credentials into encrypted Secrets, share them, and serve "
            "the validating webhook, health and metrics endpoints."
        ),
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        metavar="NS",
        help="serve only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=runner.default_operator_namespace(),
        help="namespace of the keyring Secret (default: $POD_NAMESPACE or credbridge-system)",
    )
    parser.add_argument(
        "--keyring-secret",
        default=_DEFAULTS.keyring.secret_name,
        help="name of the keyring Secret (default: %(default)s)",
    )
    add_policy_arguments(parser)
    parser.add_argument(
        "--health-port",
        type=int,
        default=_DEFAULTS.serving.health_port,
        help="port of /healthz (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=_DEFAULTS.serving.metrics_port,
        help="port of /metrics, 0 to turn off (default: %(default)s)",
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        default=_DEFAULTS.admission.port,
        help="port of the validating webhook, 0 to turn off (default: %(default)s)",
    )
    parser.add_argument(
        "--webhook-host",
        default=_DEFAULTS.admission.host,
        help="address the self-managed webhook listens on and the API server calls",
    )
    parser.add_argument(
        "--webhook-certfile",
        help="serving certificate; the webhook configuration is then managed outside the operator (the Helm chart)",
    )
    parser.add_argument("--webhook-pkeyfile", help="private key of --webhook-certfile")
    add_endpoint_arguments(parser)
    parser.add_argument(
        "--bind-address",
        default=_DEFAULTS.serving.bind_address,
        help="address of the health and metrics endpoints (default: %(default)s)",
    )
    parser.add_argument(
        "--reencrypt-rate",
        type=float,
        default=_DEFAULTS.keyring.reencrypt_per_second,
        help="Credentials re-encrypted (or, after any keyring change, verified) per second (default: %(default)s)",
    )
    parser.add_argument(
        "--sealing-key-rotation",
        type=float,
        default=_DEFAULTS.keyring.sealing_rotation,
        metavar="SECONDS",
        help="rotate the sealing key pair this often (e.g. 7776000 for 90 days); older pairs keep opening what "
        "was sealed with them; 0: only by command (default: %(default)s)",
    )
    parser.add_argument(
        "--sealing-configmap",
        default=_DEFAULTS.keyring.sealing_configmap,
        metavar="NAME",
        help="ConfigMap in the operator namespace where the sealing public keys are published (default: %(default)s)",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=_DEFAULTS.resync.interval,
        metavar="SECONDS",
        help="how often every managed Secret is read back from the API server and verified (it opens with the "
        "keyring in force and holds the current content); 0 turns it off (default: %(default)s)",
    )
    parser.add_argument(
        "--verify-rate",
        type=float,
        default=_DEFAULTS.resync.per_second,
        metavar="PER_SECOND",
        help="managed Secrets read and verified per second during such a pass (default: %(default)s)",
    )
    parser.add_argument(
        "--write-failures-before-report",
        type=int,
        default=_DEFAULTS.write_failures_before_report,
        metavar="N",
        help="failed Secret writes in a row before a Credential reports Ready=False/WriteFailed "
        "(retrying goes on; default: %(default)s)",
    )
    add_binding_arguments(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=_DEFAULTS.workers,
        help="reconcile worker threads (default: %(default)s)",
    )
    parser.add_argument("--peering", metavar="NAME", help="kopf peering name for HA (default: standalone)")
    parser.add_argument(
        "--peering-priority",
        type=int,
        default=None,
        metavar="N",
        help="this replica's priority among peers; the highest works, the others stand by "
        "(default: random, so identical replicas never tie)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=_DEFAULTS.peering_lifetime,
        metavar="SECONDS",
        help="how long a silent peer counts as alive before a standby takes over (default: %(default)s)",
    )
    add_flowise_arguments(parser)
    parser.add_argument("--log-format", choices=["text", "json"], default=_DEFAULTS.log_format)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=_DEFAULTS.log_level)
    parser.set_defaults(handler=handle)


def add_binding_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that govern CredentialBindings: plain Secret output and rollouts."""
    defaults = _DEFAULTS.bindings
    parser.add_argument(
        "--binding-secrets",
        choices=settings_module.BINDING_SECRET_MODES,
        default=defaults.secrets,
        help="whether CredentialBindings may write plain Secrets: allow (default) or deny",
    )
    parser.add_argument(
        "--binding-rollouts",
        choices=["on", "off"],
        default="on" if defaults.rollouts else "off",
        help="patch the workloads a CredentialBinding lists in spec.rollout when its content changes "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--rollout-debounce",
        type=float,
        default=defaults.rollout_debounce,
        metavar="SECONDS",
        help="wait this long after a content change before rolling out; changes within it share one rollout "
        "(default: %(default)s)",
    )


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the workload read endpoint and of Pod injection; defaults come from the settings dataclasses."""
    defaults = _DEFAULTS.endpoint
    group = parser.add_argument_group("workload reads", "the TLS endpoint Pods read values from, and Pod injection")
    group.add_argument(
        "--endpoint-port",
        type=int,
        default=defaults.port,
        help="port of the workload read endpoint (HTTPS), 0 to turn it and injection off (default: %(default)s)",
    )
    group.add_argument(
        "--endpoint-host",
        default=defaults.host,
        help="with a self-made certificate: address the endpoint listens on and its certificate names "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--endpoint-certfile",
        help="serving certificate of the endpoint (PEM); it then listens on --bind-address",
    )
    group.add_argument("--endpoint-pkeyfile", help="private key of --endpoint-certfile")
    group.add_argument(
        "--endpoint-cafile",
        help="CA bundle that signed --endpoint-certfile, given to injected Pods (default: their system trust store)",
    )
    group.add_argument(
        "--endpoint-url",
        help="URL Pods reach the endpoint at, e.g. https://credbridge.credbridge-system.svc:8443 "
        "(default: https://HOST:PORT)",
    )
    group.add_argument(
        "--read-rate",
        type=float,
        default=defaults.reads_per_second,
        metavar="PER_SECOND",
        help="reads per second each identity may make, on average (default: %(default)s)",
    )
    group.add_argument(
        "--read-burst",
        type=int,
        default=defaults.burst,
        metavar="N",
        help="reads each identity may make at once before --read-rate applies (default: %(default)s)",
    )
    group.add_argument(
        "--token-review-ttl",
        type=float,
        default=defaults.token_review_ttl,
        metavar="SECONDS",
        help="how long a TokenReview answer is reused for the same token, 0 never (default: %(default)s)",
    )
    injection_defaults = _DEFAULTS.injection
    group.add_argument(
        "--inject-image",
        default=injection_defaults.image,
        help="image of the init container injected into annotated Pods (default: %(default)s)",
    )
    group.add_argument(
        "--no-injection",
        dest="injection",
        action="store_false",
        help="do not serve the Pod injection webhook",
    )


def add_flowise_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--flowise-*` flags, with defaults from FlowiseSettings."""
    defaults = settings_module.FlowiseSettings()
    parser.add_argument(
        "--no-flowise",
        dest="flowise_enabled",
        action="store_false",
        default=defaults.enabled,
        help="do not watch FlowiseTargets (for clusters without that CRD)",
    )
    parser.add_argument(
        "--flowise-resync",
        type=float,
        default=defaults.resync_seconds,
        metavar="SECONDS",
        help="sync every FlowiseTarget again after this long, to notice edits made in Flowise (default: %(default)s)",
    )
    parser.add_argument(
        "--flowise-resync-rate",
        type=float,
        default=defaults.resync_per_second,
        metavar="PER_SECOND",
        help="most periodic FlowiseTarget syncs started per second (default: %(default)s)",
    )
    parser.add_argument(
        "--flowise-timeout",
        type=float,
        default=defaults.request_timeout,
        metavar="SECONDS",
        help="longest one request to Flowise may take (default: %(default)s)",
    )
    parser.add_argument(
        "--flowise-connect-timeout",
        type=float,
        default=defaults.connect_timeout,
        metavar="SECONDS",
        help="longest a connection to Flowise may take to open (default: %(default)s)",
    )
    parser.add_argument(
        "--flowise-max-response-bytes",
        type=int,
        default=defaults.max_response_bytes,
        metavar="BYTES",
        help="largest Flowise answer read (default: %(default)s)",
    )
    parser.add_argument(
        "--flowise-workers",
        type=int,
        default=defaults.workers,
        help="worker threads syncing FlowiseTargets (default: %(default)s)",
    )
    parser.add_argument(
        "--flowise-cleanup-timeout",
        type=float,
        default=defaults.cleanup_timeout,
        metavar="SECONDS",
        help="how long a deleted FlowiseTarget waits for its credentials to be removed from Flowise "
        "(default: %(default)s)",
    )


def flowise_settings(args: argparse.Namespace) -> settings_module.FlowiseSettings:
    """FlowiseSettings from the parsed `--flowise-*` flags."""
    return settings_module.FlowiseSettings(
        enabled=args.flowise_enabled,
        workers=args.flowise_workers,
        resync_seconds=args.flowise_resync,
        resync_per_second=args.flowise_resync_rate,
        connect_timeout=args.flowise_connect_timeout,
        request_timeout=args.flowise_timeout,
        max_response_bytes=args.flowise_max_response_bytes,
        cleanup_timeout=args.flowise_cleanup_timeout,
    )


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that decide what references and literals are allowed, shared with `credbridge validate`."""
    parser.add_argument(
        "--env-allow",
        action="append",
        default=[],
        metavar="GLOB",
        help="glob of variables <<NAME>> may read (repeatable; default: CRED_*)",
    )
    parser.add_argument(
        "--env-policy",
        action="append",
        default=[],
        metavar="GLOB=NS[,NS]",
        help="restrict variables matching GLOB to these namespaces (repeatable)",
    )
    parser.add_argument(
        "--literal-secrets",
        choices=["allow", "warn", "deny"],
        default=_DEFAULTS.admission.literal_secrets,
        help="literal values in password fields: allow, warn (default) or deny",
    )


def handle(args: argparse.Namespace) -> int:
    if bool(args.webhook_certfile) != bool(args.webhook_pkeyfile):
        raise SystemExit("credbridge run: --webhook-certfile and --webhook-pkeyfile go together")
    if bool(args.endpoint_certfile) != bool(args.endpoint_pkeyfile):
        raise SystemExit("credbridge run: --endpoint-certfile and --endpoint-pkeyfile go together")
    if args.read_rate <= 0 or args.read_burst < 1 or args.token_review_ttl < 0:
        raise SystemExit("credbridge run: --read-rate must be > 0, --read-burst >= 1 and --token-review-ttl >= 0")
    settings = settings_module.OperatorSettings(
        watch=settings_module.WatchSettings(
            namespaces=tuple(args.namespaces), operator_namespace=args.operator_namespace
        ),
        env=settings_module.EnvSettings(
            allow=tuple(args.env_allow) or names.DEFAULT_ENV_ALLOW, namespace_rules=tuple(args.env_policy)
        ),
        keyring=settings_module.KeyringSettings(
            secret_name=args.keyring_secret,
            reencrypt_per_second=args.reencrypt_rate,
            sealing_rotation=args.sealing_key_rotation,
            sealing_configmap=args.sealing_configmap,
        ),
        admission=settings_module.AdmissionSettings(
            literal_secrets=args.literal_secrets,
            port=args.webhook_port,
            host=args.webhook_host,
            certfile=args.webhook_certfile,
            pkeyfile=args.webhook_pkeyfile,
        ),
        endpoint=settings_module.EndpointSettings(
            port=args.endpoint_port,
            host=args.endpoint_host,
            certfile=args.endpoint_certfile,
            pkeyfile=args.endpoint_pkeyfile,
            cafile=args.endpoint_cafile,
            url=args.endpoint_url,
            reads_per_second=args.read_rate,
            burst=args.read_burst,
            token_review_ttl=args.token_review_ttl,
        ),
        injection=settings_module.InjectionSettings(enabled=args.injection, image=args.inject_image),
        serving=settings_module.ServingSettings(
            health_port=args.health_port, metrics_port=args.metrics_port, bind_address=args.bind_address
        ),
        resync=settings_module.ResyncSettings(interval=args.resync_interval, per_second=args.verify_rate),
        bindings=settings_module.BindingSettings(
            secrets=args.binding_secrets,
            rollouts=args.binding_rollouts == "on",
            rollout_debounce=args.rollout_debounce,
        ),
        write_failures_before_report=args.write_failures_before_report,
        flowise=flowise_settings(args),
        peering=args.peering,
        peering_priority=args.peering_priority if args.peering_priority is not None else secrets.randbelow(2**31),
        peering_lifetime=args.peering_lifetime,
        workers=args.workers,
        log_format=args.log_format,
        log_level=args.log_level,
    )
    try:
        settings_check(settings)
    except ValueError as error:
        raise SystemExit(f"credbridge run: {error}") from None
    return runner.run(settings)


def settings_check(settings: settings_module.OperatorSettings) -> None:
    """Reject malformed --env-policy rules and a negative --sealing-key-rotation before connecting to anything."""
    settings_module.env_policy(settings.env.allow, settings.env.namespace_rules)
    if settings.keyring.sealing_rotation < 0:
        raise ValueError("--sealing-key-rotation must be 0 (off) or a number of seconds")
