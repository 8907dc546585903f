"""The operator's settings, one small dataclass per concern, filled from `credbridge run` flags.

Every attribute says its unit, its default and why it exists. A setting that is a flag says so with
`setting(default, "--flag", ...)`: `credbridge run`'s flags are made from these dataclasses
(cli/flags.py), their help is the attribute's docstring, and the Helm value named by `chart` must
have the same default (tests/unit/test_chart.py). So `credbridge run --help`, the chart and this file
tell the same story.
"""

from __future__ import annotations

import dataclasses
import typing

import credbridge
from credbridge import probing
from credbridge.core import egress, envrefs, names
from credbridge.core.oauth2 import schedule
from credbridge.oauth2client import client as oauth2_client

T = typing.TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a setting is set from the command line and from the Helm chart."""

    name: str
    """The flag, e.g. `--webhook-port`."""
    style: str = "value"
    """`value` (one value), `repeat` (repeatable, collected into a tuple), `on-off` (a bool written
    on|off) or `off-switch` (a bool the flag turns off, e.g. `--no-flowise`)."""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    chart: str | None = None
    """Dotted Helm value that sets this flag and must have the same default (None: no such value)."""


def setting(default: T, flag: str | None = None, **kwargs: typing.Any) -> T:
    """A settings attribute with its default, and the flag that sets it (none: not a flag)."""
    metadata = {"flag": Flag(flag, **kwargs)} if flag else {}
    field: T = dataclasses.field(default=default, metadata=metadata)
    return field


def nested(factory: typing.Callable[[], T], **flags: Flag) -> T:
    """A settings attribute that is a dataclass of another layer (a core policy, a client's limits), with the
    flags of its attributes named here: their defaults and help stay where the dataclass is written."""
    field: T = dataclasses.field(default_factory=factory, metadata={"flags": flags})
    return field


RESERVED_ENV_NAMES = frozenset(
    {
        "KUBECONFIG",
        "POD_NAMESPACE",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "HOME",
        "PATH",
        "PYTHONPATH",
    }
)
"""Variables the operator itself reads: never resolvable as <<NAME>>, whatever the allow-list says."""


def env_policy(allow: tuple[str, ...] | list[str], namespace_rules: tuple[str, ...] | list[str]) -> envrefs.EnvPolicy:
    """The policy for <<NAME>> references, as the operator applies it (and `credbridge validate` checks it).

    Raises ValueError naming a malformed `--env-policy` rule.
    """
    parsed = envrefs.parse_policy(allow, namespace_rules)
    return envrefs.EnvPolicy(
        allow=parsed.allow, namespace_rules=parsed.namespace_rules, reserved_names=RESERVED_ENV_NAMES
    )


@dataclasses.dataclass(frozen=True)
class WatchSettings:
    namespaces: tuple[str, ...] = setting((), "--namespace", style="repeat", metavar="NS")
    """Namespaces to serve; empty means every namespace (cluster-wide)."""
    operator_namespace: str = setting(names.DEFAULT_OPERATOR_NAMESPACE, "--operator-namespace")
    """Namespace of the keyring Secret; it must exist. Defaults to $POD_NAMESPACE in a Pod."""


@dataclasses.dataclass(frozen=True)
class EnvSettings:
    allow: tuple[str, ...] = setting(
        names.DEFAULT_ENV_ALLOW, "--env-allow", style="repeat", metavar="GLOB", chart="envAllow"
    )
    """Glob patterns of variables that <<NAME>> references may read."""
    namespace_rules: tuple[str, ...] = setting((), "--env-policy", style="repeat", metavar="GLOB=NS[,NS]")
    """`GLOB=ns1,ns2` rules: variables matching GLOB are only resolvable in those namespaces, and released as
    plaintext only there (the tenancy rule of docs/consumers.md)."""


@dataclasses.dataclass(frozen=True)
class KeyringSettings:
    secret_name: str = setting(names.DEFAULT_KEYRING_SECRET, "--keyring-secret", chart="keyringSecret")
    """Name of the keyring Secret in the operator namespace; created on first start when absent."""
    reencrypt_per_second: float = setting(10.0, "--reencrypt-rate", metavar="PER_SECOND", chart="reencryptRate")
    """How many Credentials per second the background re-encryption after a key rotation handles."""
    sealing_rotation: float = setting(0.0, "--sealing-key-rotation", metavar="SECONDS", chart="sealing.rotationSeconds")
    """Seconds between scheduled rotations of the sealing key pair (e.g. 7776000 for 90 days); 0: only by
    command (`credbridge keys rotate --sealing`). Older pairs stay and keep opening what was sealed to them,
    so a rotation breaks nothing; it limits what a leaked private key could open in the future."""
    sealing_configmap: str = setting(names.DEFAULT_SEALING_CONFIGMAP, "--sealing-configmap", metavar="NAME")
    """ConfigMap in the operator namespace where the sealing public keys are published."""


@dataclasses.dataclass(frozen=True)
class AdmissionSettings:
    literal_secrets: str = setting(
        "warn", "--literal-secrets", choices=("allow", "warn", "deny"), chart="literalSecrets"
    )
    """What `kubectl apply` gets for a literal value in a password field: allow, warn or deny."""
    port: int = setting(9443, "--webhook-port", chart="webhook.port")
    """Port of the validating webhook server (HTTPS); 0 turns the webhook off."""
    host: str = setting("127.0.0.1", "--webhook-host")
    """Address the webhook server listens on and the API server calls (self-managed mode)."""
    certfile: str | None = setting(None, "--webhook-certfile", metavar="FILE")
    """Serving certificate (PEM) of the webhook; when given, the webhook configuration is managed outside
    the operator (the Helm chart)."""
    pkeyfile: str | None = setting(None, "--webhook-pkeyfile", metavar="FILE")
    """Private key of --webhook-certfile."""


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    health_port: int = setting(8080, "--health-port", chart="health.port")
    """Port of the liveness endpoint /healthz."""
    metrics_port: int = setting(9090, "--metrics-port", chart="metrics.port")
    """Port of the Prometheus endpoint /metrics; 0 turns it off."""
    bind_address: str = setting("0.0.0.0", "--bind-address")  # noqa: S104 -- probes and scrapes come from outside the Pod
    """Address the health and metrics endpoints listen on."""


DEFAULT_IMAGE = f"ghcr.io/credbridge/credbridge:{credbridge.__version__}"
"""The operator image the chart installs by default; injected init containers run `credbridge fetch` from it."""


@dataclasses.dataclass(frozen=True)
class EndpointSettings:
    """The workload read endpoint: Pods read values with their ServiceAccount token over TLS."""

    port: int = setting(8443, "--endpoint-port", chart="endpoint.port")
    """Port of the read endpoint (HTTPS); 0 turns it off, and Pod injection with it."""
    host: str = setting("127.0.0.1", "--endpoint-host")
    """Self-managed certificate: the address the endpoint listens on and the name its certificate is for."""
    certfile: str | None = setting(None, "--endpoint-certfile", metavar="FILE")
    """Serving certificate (PEM) of the read endpoint from outside (the chart); it then listens on
    --bind-address. Without it the operator makes a CA and a certificate for --endpoint-host, and writes the
    CA to ca.crt in a directory it logs at start."""
    pkeyfile: str | None = setting(None, "--endpoint-pkeyfile", metavar="FILE")
    """Private key of --endpoint-certfile."""
    cafile: str | None = setting(None, "--endpoint-cafile", metavar="FILE")
    """CA bundle that signed --endpoint-certfile, handed to injected Pods; without it they use the image's trust
    store."""
    url: str | None = setting(None, "--endpoint-url", metavar="URL")
    """Base URL Pods reach the endpoint at (e.g. https://credbridge.credbridge-system.svc:8443); default
    https://HOST:PORT."""
    reads_per_second: float = setting(10.0, "--read-rate", metavar="PER_SECOND", chart="endpoint.readRate")
    """Reads each identity may make per second, on average (a token bucket)."""
    burst: int = setting(50, "--read-burst", metavar="N", chart="endpoint.readBurst")
    """Reads each identity may make at once before the rate applies (Pods of a Deployment starting together)."""
    token_review_ttl: float = setting(10.0, "--token-review-ttl", metavar="SECONDS", chart="endpoint.tokenReviewTTL")
    """Seconds a TokenReview answer is reused for the same token (never past the token's expiry); 0: never.
    A token of a deleted ServiceAccount is refused at most this long after the deletion."""
    token_cache_size: int = 10_000
    """TokenReview answers kept at most (least recently used go first)."""
    workers: int = 4
    """Threads doing reviews and decryption for the endpoint, apart from the reconcile workers."""


@dataclasses.dataclass(frozen=True)
class InjectionSettings:
    """Pod injection by the mutating webhook (needs the webhook server and the read endpoint)."""

    enabled: bool = setting(True, "--no-injection", style="off-switch", chart="injection.enabled")
    """Serve the mutating webhook that injects `credbridge fetch` into annotated Pods."""
    image: str = setting(DEFAULT_IMAGE, "--inject-image", metavar="IMAGE")
    """Image of the injected init container: the operator image, which holds the `credbridge` command."""
    pull_policy: str = "IfNotPresent"
    """imagePullPolicy of the injected init container."""


@dataclasses.dataclass(frozen=True)
class ResyncSettings:
    """Periodic passes over every managed Secret as stored (`--resync-*` flags, chart values `resync.*`)."""

    interval: float = setting(3600.0, "--resync-interval", metavar="SECONDS", chart="resync.interval")
    """Seconds between passes that read every managed Secret from the API server and check it (it opens
    with the keyring in force and holds the current content, or it is rewritten); 0 turns them off."""
    per_second: float = setting(20.0, "--resync-rate", metavar="PER_SECOND", chart="resync.rate")
    """Managed Secrets read and checked per second during such a pass (one GET each): bounds its load."""


BINDING_SECRET_MODES = ("allow", "deny")


@dataclasses.dataclass(frozen=True)
class BindingSettings:
    secrets: str = setting("allow", "--binding-secrets", choices=BINDING_SECRET_MODES, chart="bindings.secrets")
    """`allow` or `deny`: whether CredentialBindings may write plain Secrets (spec.secret) at all."""
    rollouts: bool = setting(True, "--binding-rollouts", style="on-off", chart="bindings.rollouts")
    """Whether the operator patches the workloads listed in a binding's spec.rollout (needs RBAC patch)."""
    rollout_debounce: float = setting(2.0, "--rollout-debounce", metavar="SECONDS", chart="bindings.rolloutDebounce")
    """Seconds from a content change to the rollout it causes; further changes within them share it."""
    target_recheck: float = 30.0
    """Seconds between looks for a rollout target that does not exist yet."""


@dataclasses.dataclass(frozen=True)
class FlowiseSettings:
    """How the operator syncs FlowiseTargets (`--flowise-*` flags)."""

    enabled: bool = setting(True, "--no-flowise", style="off-switch", chart="flowise.enabled")
    """Watch FlowiseTargets and push Credentials into Flowise; off needs no FlowiseTarget CRD."""
    workers: int = setting(2, "--flowise-workers", metavar="N")
    """Worker threads syncing targets; one target is never synced by two at once."""
    resync_seconds: float = setting(60.0, "--flowise-resync", metavar="SECONDS", chart="flowise.resyncSeconds")
    """Every target is synced again after this many seconds even without a change in the cluster,
    which is how edits made in Flowise's UI are noticed and reverted."""
    resync_per_second: float = setting(5.0, "--flowise-resync-rate", metavar="PER_SECOND")
    """At most this many periodic resyncs start per second (a bounded load on Flowise and the API)."""
    connect_timeout: float = setting(5.0, "--flowise-connect-timeout", metavar="SECONDS")
    """Seconds to connect to a Flowise server."""
    request_timeout: float = setting(30.0, "--flowise-timeout", metavar="SECONDS", chart="flowise.timeoutSeconds")
    """Seconds one request to Flowise may take in all, however slowly the server answers."""
    max_response_bytes: int = setting(4 * 1024 * 1024, "--flowise-max-response-bytes", metavar="BYTES")
    """Largest Flowise answer read (bytes); larger ones fail instead of filling memory."""
    types_cache_seconds: float = 600.0
    """How long the credential types a Flowise knows are remembered before asking again."""
    cleanup_timeout: float = setting(300.0, "--flowise-cleanup-timeout", metavar="SECONDS")
    """Seconds after a FlowiseTarget's deletion during which credbridge keeps trying to remove what it
    pushed; after that it lets the target go (with an Event) rather than block namespace deletion."""


@dataclasses.dataclass(frozen=True)
class VerificationSettings:
    """How Credentials are checked against their services (`--verification-*` flags, chart values
    `verification.*`).

    Verification informs and never blocks: a failing check changes the Verified condition, Events
    and metrics, and nothing else, unless `block_consumers` says otherwise.
    """

    enabled: bool = setting(True, "--no-verification", style="off-switch", chart="verification.enabled")
    """Check Credentials against their services (on content change, periodically and on `credbridge verify`),
    and report expiry."""
    interval: float = setting(6 * 3600.0, "--verification-interval", metavar="SECONDS", chart="verification.interval")
    """Seconds between periodic checks of one Credential; 0 turns periodic checks off."""
    jitter: float = setting(0.1, "--verification-jitter", metavar="FRACTION", chart="verification.jitter")
    """Fraction of the interval by which each Credential's periodic check moves (its own, stable across
    restarts), so Credentials created together are not checked together."""
    per_second: float = setting(2.0, "--verification-rate", metavar="PER_SECOND", chart="verification.rate")
    """Most checks started per second across all Credentials (the global rate): bounds the load on vendors
    and on the operator when thousands of Credentials are due at once. A check asked for with
    `credbridge verify` does not wait its turn."""
    debounce: float = setting(10.0, "--verification-debounce", metavar="SECONDS", chart="verification.debounce")
    """Seconds from a content change to its check; further changes within them share one check."""
    workers: int = setting(4, "--verification-workers", metavar="N", chart="verification.workers")
    """Threads running checks (a check may wait for a slow service up to --verification-timeout)."""
    allow_hosts: tuple[str, ...] = setting(
        (), "--verification-allow-host", style="repeat", metavar="HOST", chart="verification.allowHosts"
    )
    """Hosts a Credential's field may point a check at (`qdrant.internal`, `*.openai.azure.com`); a type's own
    vendor host needs no entry."""
    allow_networks: tuple[str, ...] = setting(
        (), "--verification-allow-network", style="repeat", metavar="CIDR", chart="verification.allowNetworks"
    )
    """Networks checks may connect into although private, loopback or link-local (`10.0.0.0/8`); a cloud
    metadata address needs its own /32 or /128."""
    allow_plain_http: bool = setting(
        False, "--verification-allow-plain-http", style="on-off", chart="verification.allowPlainHttp"
    )
    """Allow `http://` checks (the credential then crosses the network unencrypted)."""
    block_consumers: bool = setting(
        False, "--verification-block-consumers", style="on-off", chart="verification.blockConsumers"
    )
    """Hold back Credentials whose last check found them Invalid from bindings, workload reads and
    FlowiseTargets (what they received before stays); off: verification only informs."""
    ca_file: str | None = setting(None, "--verification-ca-file", metavar="FILE")
    """PEM bundle trusted for checks' TLS instead of the system store (a private CA of self-hosted services)."""
    resolve: tuple[str, ...] = setting(
        (), "--verification-resolve", style="repeat", metavar="NAME[:PORT]=ADDRESS[:PORT]"
    )
    """Answers for checks instead of DNS (split-horizon names, an egress proxy): NAME=ADDRESS, repeat a name for
    several addresses; with ports, connections to ADDRESS:PORT go to the second port. The egress policy judges
    these addresses like any DNS answer."""
    connect_timeout: float = setting(5.0, "--verification-connect-timeout", metavar="SECONDS")
    """Seconds to connect (TCP and TLS) to a service."""
    total_timeout: float = setting(
        15.0, "--verification-timeout", metavar="SECONDS", chart="verification.timeoutSeconds"
    )
    """Seconds one check may take in all, however slowly the service answers."""
    max_answer_bytes: int = setting(64 * 1024, "--verification-max-answer-bytes", metavar="BYTES")
    """Most bytes read from a service's answer; the rest is never read."""

    def egress_policy(self) -> egress.EgressPolicy:
        """The egress policy these settings describe; raises ValueError naming a malformed network."""
        return egress.EgressPolicy(
            allow_hosts=tuple(self.allow_hosts),
            allow_networks=egress.parse_networks(self.allow_networks),
            allow_plain_http=self.allow_plain_http,
        )

    def static_hosts(self) -> egress.StaticHosts:
        """The answers of --verification-resolve; raises ValueError naming a malformed entry."""
        return egress.parse_static_hosts(self.resolve)

    def probe_limits(self) -> probing.ProbeLimits:
        """The time and size bounds of one check."""
        return probing.ProbeLimits(
            connect_timeout=self.connect_timeout,
            total_timeout=self.total_timeout,
            max_answer_bytes=self.max_answer_bytes,
        )


@dataclasses.dataclass(frozen=True)
class OAuth2Settings:
    """How the operator keeps OAuth2 access tokens fresh (`--oauth2-*` flags, chart values `oauth2.*`).

    The schedule and the request limits are the dataclasses the pure planner and the token client
    take, so their defaults and meanings are written once, where they are used; the flags of their
    attributes are named here.
    """

    enabled: bool = setting(True, "--no-oauth2", style="off-switch", chart="oauth2.enabled")
    """Refresh the access tokens of OAuth2 Credentials (types with spec.oauth2) before they expire."""
    refresh: schedule.RefreshPolicy = nested(
        schedule.RefreshPolicy,
        refresh_share=Flag("--oauth2-refresh-share", metavar="FRACTION", chart="oauth2.refreshShare"),
        jitter_share=Flag("--oauth2-jitter-share", metavar="FRACTION", chart="oauth2.jitterShare"),
        assumed_lifetime=Flag("--oauth2-assumed-lifetime", metavar="SECONDS"),
        min_interval=Flag("--oauth2-min-interval", metavar="SECONDS"),
        backoff_initial=Flag("--oauth2-backoff-initial", metavar="SECONDS", chart="oauth2.backoffInitialSeconds"),
        backoff_max=Flag("--oauth2-backoff-max", metavar="SECONDS", chart="oauth2.backoffMaxSeconds"),
        retry_after_max=Flag("--oauth2-retry-after-max", metavar="SECONDS"),
    )
    """When to refresh (share of the lifetime, jitter) and how to back off (see RefreshPolicy)."""
    client: oauth2_client.ClientSettings = nested(
        oauth2_client.ClientSettings,
        connect_timeout=Flag("--oauth2-connect-timeout", metavar="SECONDS"),
        request_timeout=Flag("--oauth2-timeout", metavar="SECONDS", chart="oauth2.timeoutSeconds"),
        max_response_bytes=Flag("--oauth2-max-response-bytes", metavar="BYTES"),
        allow_http=Flag("--oauth2-allow-plain-http", style="on-off"),
    )
    """Limits of each token request: connect and total timeouts, largest answer (see ClientSettings)."""
    allow_hosts: tuple[str, ...] = setting(
        (), "--oauth2-allow-host", style="repeat", metavar="HOST", chart="oauth2.allowHosts"
    )
    """Token endpoint hosts a Credential's accessTokenUrl field may name (`idp.internal`, `*.auth0.com`): the
    client secret and refresh token go there. The host a type declares itself (its accessTokenUrl default,
    such as oauth2.googleapis.com) needs no entry."""
    allow_networks: tuple[str, ...] = setting(
        (), "--oauth2-allow-network", style="repeat", metavar="CIDR", chart="oauth2.allowNetworks"
    )
    """Networks token requests may connect into although private, loopback or link-local (`10.0.0.0/8`, a
    provider inside the cluster); a cloud metadata address needs its own /32 or /128."""
    ca_file: str | None = setting(None, "--oauth2-ca-file", metavar="FILE")
    """CA bundle (PEM) trusted for token endpoints instead of the system store (a private provider)."""
    workers: int = setting(2, "--oauth2-workers", metavar="N")
    """Threads sending token requests; one Credential is never refreshed by two at once."""
    resync_seconds: float = 600.0
    """Every OAuth2 Credential is looked at again after this long even without a change (its planned refresh
    is a timer; this is the safety net)."""
    resync_per_second: float = 10.0
    """At most this many of those periodic looks start per second (one Secret read each)."""
    claim_margin: float = 30.0
    """Seconds a replica's claim on a token request outlasts the request's own timeout (HA, `--peering`)."""

    def egress_policy(self) -> egress.EgressPolicy:
        """The egress policy of token requests; raises ValueError naming a malformed network."""
        networks: list[egress.IPNetwork] = []
        for text in self.allow_networks:
            try:
                networks.extend(egress.parse_networks([text]))
            except ValueError:
                raise ValueError(
                    f"--oauth2-allow-network {text!r} is not a network in CIDR notation with its host bits zero, "
                    "e.g. 10.1.0.0/16 or 127.0.0.1/32"
                ) from None
        return egress.EgressPolicy(
            allow_hosts=tuple(self.allow_hosts),
            allow_networks=tuple(networks),
            allow_plain_http=self.client.allow_http,
        )


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    watch: WatchSettings = dataclasses.field(default_factory=WatchSettings)
    env: EnvSettings = dataclasses.field(default_factory=EnvSettings)
    keyring: KeyringSettings = dataclasses.field(default_factory=KeyringSettings)
    admission: AdmissionSettings = dataclasses.field(default_factory=AdmissionSettings)
    serving: ServingSettings = dataclasses.field(default_factory=ServingSettings)
    resync: ResyncSettings = dataclasses.field(default_factory=ResyncSettings)
    bindings: BindingSettings = dataclasses.field(default_factory=BindingSettings)
    endpoint: EndpointSettings = dataclasses.field(default_factory=EndpointSettings)
    injection: InjectionSettings = dataclasses.field(default_factory=InjectionSettings)
    flowise: FlowiseSettings = dataclasses.field(default_factory=FlowiseSettings)
    verification: VerificationSettings = dataclasses.field(default_factory=VerificationSettings)
    oauth2: OAuth2Settings = dataclasses.field(default_factory=OAuth2Settings)
    peering: str | None = setting(None, "--peering", metavar="NAME")
    """kopf peering name for HA (a standby takes over when the active one dies); None = standalone."""
    peering_priority: int = setting(0, "--peering-priority", metavar="N")
    """Priority among peers: the highest-priority live replica works, the others stand by."""
    peering_lifetime: int = setting(20, "--peering-lifetime", metavar="SECONDS")
    """Seconds a peer stays "alive" without renewing its entry: the failover time after a crash."""
    workers: int = setting(32, "--workers", metavar="N", chart="workers")
    """Reconcile worker threads. A reconcile mostly waits for the API server (two writes for a new
    Credential), so throughput grows with concurrent reconciles, not with CPUs."""
    write_failures_before_report: int = setting(3, "--write-failures-before-report", metavar="N")
    """Failed writes of a managed Secret in a row before its Credential reports Ready=False/WriteFailed
    (retrying goes on with backoff; one failure alone is often a conflict that the next attempt fixes)."""
    log_format: str = setting("text", "--log-format", choices=("text", "json"))
    """`text` or `json` (one JSON object per line)."""
    log_level: str = setting("info", "--log-level", choices=("debug", "info", "warning", "error"), chart="logLevel")
    """debug, info, warning or error. No level ever logs a secret value."""
