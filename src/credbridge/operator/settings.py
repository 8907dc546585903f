"""The operator's settings, one small dataclass per concern, filled from `credbridge run` flags.

Every attribute says its unit, its default and why it exists, so `credbridge run --help` and this
file tell the same story.
"""

from __future__ import annotations

import dataclasses

import credbridge
from credbridge.core import envrefs, names
from credbridge.core.oauth2 import schedule
from credbridge.oauth2client import client as oauth2_client

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
    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty means every namespace (cluster-wide)."""
    operator_namespace: str = names.DEFAULT_OPERATOR_NAMESPACE
    """Where the keyring Secret lives; defaults to $POD_NAMESPACE in a Pod."""


@dataclasses.dataclass(frozen=True)
class EnvSettings:
    allow: tuple[str, ...] = names.DEFAULT_ENV_ALLOW
    """Glob patterns of variables that <<NAME>> references may read (default CRED_*)."""
    namespace_rules: tuple[str, ...] = ()
    """`GLOB=ns1,ns2` rules: variables matching GLOB are only resolvable in those namespaces."""


@dataclasses.dataclass(frozen=True)
class KeyringSettings:
    secret_name: str = names.DEFAULT_KEYRING_SECRET
    """Name of the keyring Secret in the operator namespace; created on first start when absent."""
    reencrypt_per_second: float = 10.0
    """How many Credentials per second the background re-encryption after a key rotation handles."""


@dataclasses.dataclass(frozen=True)
class AdmissionSettings:
    literal_secrets: str = "warn"
    """What `kubectl apply` gets for a literal value in a password field: allow, warn or deny."""
    port: int = 9443
    """Port of the validating webhook server (HTTPS); 0 turns the webhook off."""
    host: str = "127.0.0.1"
    """Address the webhook server listens on and the API server calls (self-managed mode)."""
    certfile: str | None = None
    """Serving certificate (PEM). When given, the webhook configuration is managed outside (Helm)."""
    pkeyfile: str | None = None
    """Private key of `certfile`."""


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    health_port: int = 8080
    """Port of the liveness endpoint /healthz."""
    metrics_port: int = 9090
    """Port of the Prometheus endpoint /metrics; 0 turns it off."""
    bind_address: str = "0.0.0.0"  # noqa: S104 -- probes and scrapes come from outside the Pod
    """Address the health and metrics endpoints listen on."""


DEFAULT_IMAGE = f"ghcr.io/credbridge/credbridge:{credbridge.__version__}"
"""The operator image the chart installs by default; injected init containers run `credbridge fetch` from it."""


@dataclasses.dataclass(frozen=True)
class EndpointSettings:
    """The workload read endpoint: Pods read values with their ServiceAccount token over TLS."""

    port: int = 8443
    """Port of the read endpoint (HTTPS); 0 turns it off, and Pod injection with it."""
    host: str = "127.0.0.1"
    """Self-managed certificate: the address the endpoint listens on and the name its certificate is for."""
    certfile: str | None = None
    """Serving certificate (PEM) from outside (the chart); the endpoint then listens on the bind address."""
    pkeyfile: str | None = None
    """Private key of `certfile`."""
    cafile: str | None = None
    """CA bundle that signed `certfile`, handed to injected Pods; None: they use the image's trust store."""
    url: str | None = None
    """Base URL Pods reach the endpoint at (e.g. https://credbridge.credbridge-system.svc:8443); default
    https://HOST:PORT."""
    reads_per_second: float = 10.0
    """Reads each identity may make per second, on average (a token bucket)."""
    burst: int = 50
    """Reads each identity may make at once before the rate applies (Pods of a Deployment starting together)."""
    token_review_ttl: float = 10.0
    """Seconds a TokenReview answer is reused for the same token (never past the token's expiry); 0: never.
    A token of a deleted ServiceAccount is refused at most this long after the deletion."""
    token_cache_size: int = 10_000
    """TokenReview answers kept at most (least recently used go first)."""
    workers: int = 4
    """Threads doing reviews and decryption for the endpoint, apart from the reconcile workers."""


@dataclasses.dataclass(frozen=True)
class InjectionSettings:
    """Pod injection by the mutating webhook (needs the webhook server and the read endpoint)."""

    enabled: bool = True
    """Serve the mutating webhook that injects `credbridge fetch` into annotated Pods."""
    image: str = DEFAULT_IMAGE
    """Image of the injected init container: the operator image, which holds the `credbridge` command."""
    pull_policy: str = "IfNotPresent"
    """imagePullPolicy of the injected init container."""


@dataclasses.dataclass(frozen=True)
class ResyncSettings:
    interval: float = 3600.0
    """Seconds between passes that read every managed Secret from the API server and verify it
    (it opens with the keyring in force and holds the current content); 0 turns them off."""
    per_second: float = 20.0
    """Managed Secrets verified per second during such a pass (one GET each): bounds its load."""


@dataclasses.dataclass(frozen=True)
class BindingSettings:
    secrets: str = "allow"
    """`allow` or `deny`: whether CredentialBindings may write plain Secrets (spec.secret) at all."""
    rollouts: bool = True
    """Whether the operator patches the workloads listed in a binding's spec.rollout (needs RBAC patch)."""
    rollout_debounce: float = 2.0
    """Seconds from a content change to the rollout it causes; further changes within them share it."""
    target_recheck: float = 30.0
    """Seconds between looks for a rollout target that does not exist yet."""


BINDING_SECRET_MODES = ("allow", "deny")


@dataclasses.dataclass(frozen=True)
class FlowiseSettings:
    """How the operator syncs FlowiseTargets (`--flowise-*` flags)."""

    enabled: bool = True
    """Watch FlowiseTargets and push Credentials into Flowise; off needs no FlowiseTarget CRD."""
    workers: int = 2
    """Worker threads syncing targets; one target is never synced by two at once."""
    resync_seconds: float = 60.0
    """Every target is synced again after this many seconds even without a change in the cluster,
    which is how edits made in Flowise's UI are noticed and reverted."""
    resync_per_second: float = 5.0
    """At most this many periodic resyncs start per second (a bounded load on Flowise and the API)."""
    connect_timeout: float = 5.0
    """Seconds to connect to a Flowise server."""
    request_timeout: float = 30.0
    """Seconds one request to Flowise may take in all, however slowly the server answers."""
    max_response_bytes: int = 4 * 1024 * 1024
    """Largest Flowise answer read (bytes); larger ones fail instead of filling memory."""
    types_cache_seconds: float = 600.0
    """How long the credential types a Flowise knows are remembered before asking again."""
    cleanup_timeout: float = 300.0
    """Seconds after a FlowiseTarget's deletion during which credbridge keeps trying to remove what it
    pushed; after that it lets the target go (with an Event) rather than block namespace deletion."""


@dataclasses.dataclass(frozen=True)
class OAuth2Settings:
    """How the operator keeps OAuth2 access tokens fresh (`--oauth2-*` flags).

    The schedule and the request limits are the dataclasses the pure planner and the token client
    take, so their defaults and meanings are written once, where they are used.
    """

    enabled: bool = True
    """Refresh the access tokens of OAuth2 Credentials (types with spec.oauth2)."""
    refresh: schedule.RefreshPolicy = dataclasses.field(default_factory=schedule.RefreshPolicy)
    """When to refresh (share of the lifetime, jitter) and how to back off (see RefreshPolicy)."""
    client: oauth2_client.ClientSettings = dataclasses.field(default_factory=oauth2_client.ClientSettings)
    """Limits of each token request: connect and total timeouts, largest answer (see ClientSettings)."""
    ca_file: str | None = None
    """CA bundle (PEM) trusted for token endpoints instead of the system store (a private provider)."""
    workers: int = 2
    """Threads sending token requests; one Credential is never refreshed by two at once."""


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
    oauth2: OAuth2Settings = dataclasses.field(default_factory=OAuth2Settings)
    peering: str | None = None
    """kopf peering name for HA (a standby takes over when the active one dies); None = standalone."""
    peering_priority: int = 0
    """Priority among peers: the highest-priority live replica works, the others stand by."""
    peering_lifetime: int = 20
    """Seconds a peer stays "alive" without renewing its entry: the failover time after a crash."""
    workers: int = 32
    """Reconcile worker threads. A reconcile mostly waits for the API server (two writes for a new
    Credential), so throughput grows with concurrent reconciles, not with CPUs."""
    write_failures_before_report: int = 3
    """Failed writes of a managed Secret in a row before its Credential reports Ready=False/WriteFailed
    (retrying goes on with backoff; one failure alone is often a conflict that the next attempt fixes)."""
    log_format: str = "text"
    """`text` or `json` (one JSON object per line)."""
    log_level: str = "info"
    """debug, info, warning or error. No level ever logs a secret value."""
