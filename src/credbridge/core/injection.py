"""Pod injection: what the mutating webhook adds to a Pod annotated `credbridge.io/inject: <binding>[,...]`.

The values must reach the application without passing through etcd, and without the application
having to know about credbridge. So at admission the Pod gets:

- a projected ServiceAccount token with audience `credbridge.io` (volume `credbridge-token`),
  mounted only into the init container: the application itself never holds a token that can read
  values;
- an in-memory `emptyDir` (volume `credbridge-values`, medium Memory) for the files;
- an init container `credbridge-fetch` running `credbridge fetch --binding ... --dir ...` from
  the operator image, which writes one file per key (mode 0400) before the application starts;
- the values volume mounted read-only into every other container (and the Pod's own init
  containers, which run after ours);
- with `credbridge.io/inject-refresh: SECONDS`, a native sidecar `credbridge-refresh`
  (an init container with `restartPolicy: Always`) running `credbridge fetch --watch`, so the
  files follow changes of the Credential while the Pod runs.

Everything here is a function of the Pod and the settings: the webhook handler only hands the
result to the API server. A Pod already carrying `credbridge-fetch` is left alone, so a
re-invocation changes nothing.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import re
import typing

from credbridge.core import names, workload

Json = dict[str, typing.Any]

TOKEN_VOLUME = "credbridge-token"
VALUES_VOLUME = "credbridge-values"
FETCH_CONTAINER = "credbridge-fetch"
REFRESH_CONTAINER = "credbridge-refresh"
TOKEN_DIR = workload.TOKEN_PATH.rsplit("/", 1)[0]
"""Where the projected token volume is mounted in the init container (the token is `token` in it)."""
VALUES_DIR = "/var/run/secrets/credbridge.io/values"
"""Where the values volume is mounted: one file per key."""

REFRESH_ANNOTATION = f"{names.GROUP}/inject-refresh"
"""Seconds between reads of the refresh sidecar; absent: no sidecar (values read once, at start)."""
FILE_MODE_ANNOTATION = f"{names.GROUP}/inject-file-mode"
"""Mode of the value files: 0400 (default), 0440 or 0444, for containers running as another user."""
FILE_MODES = ("0400", "0440", "0444")

TOKEN_EXPIRATION_SECONDS = 3600
"""Lifetime of the projected token; the kubelet renews it before it expires."""
VALUES_SIZE_LIMIT = "16Mi"
"""Size limit of the in-memory values volume (it counts against the Pod's memory)."""
MIN_REFRESH_SECONDS = 5

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclasses.dataclass(frozen=True)
class InjectionSettings:
    """What the webhook puts into Pods, from the operator's settings."""

    image: str
    """Image of the init container: the operator's own image, which holds the `credbridge` command."""
    endpoint_url: str
    """Base URL of the read endpoint as seen from Pods, e.g. https://credbridge.credbridge-system.svc:8443."""
    ca_pem: str | None = dataclasses.field(default=None, repr=False)
    """CA bundle that signed the endpoint's certificate (public); None: the image's system trust store."""
    pull_policy: str = "IfNotPresent"


@dataclasses.dataclass(frozen=True)
class Injection:
    """The Pod spec lists after injection (each replaces the Pod's list of the same name)."""

    volumes: list[Json]
    init_containers: list[Json]
    containers: list[Json]


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why the Pod is refused: names the annotation or the conflicting name, and the fix."""

    message: str


@dataclasses.dataclass(frozen=True)
class Skip:
    """Nothing to add; `warning` (when set) is shown to whoever created the Pod."""

    warning: str | None = None


def requested_bindings(annotation: str) -> list[str] | Refusal:
    """The binding names of a `credbridge.io/inject` value, in order and without repeats."""
    found: list[str] = []
    for raw in annotation.split(","):
        name = raw.strip()
        if not name:
            continue
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            return Refusal(
                f"annotation {names.INJECT_ANNOTATION}: {name[:80]!r} is not a CredentialBinding name: list binding "
                "names separated by commas, e.g. chat-api-openai,chat-api-postgres"
            )
        if name not in found:
            found.append(name)
    if not found:
        return Refusal(
            f"annotation {names.INJECT_ANNOTATION} is empty: name the CredentialBindings to inject, separated by commas"
        )
    return found


def plan_injection(
    pod: collections.abc.Mapping[str, typing.Any],
    namespace_labels: collections.abc.Mapping[str, str],
    settings: InjectionSettings,
) -> Injection | Refusal | Skip:
    """What the webhook does with `pod` in a namespace labelled `namespace_labels`."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if names.INJECT_ANNOTATION not in annotations:
        return Skip()
    if namespace_labels.get(names.INJECTION_NAMESPACE_LABEL) != names.INJECTION_NAMESPACE_VALUE:
        return Skip(
            f"annotation {names.INJECT_ANNOTATION} is ignored: this namespace is not labelled "
            f"{names.INJECTION_NAMESPACE_LABEL}={names.INJECTION_NAMESPACE_VALUE} (kubectl label namespace NAME "
            f"{names.INJECTION_NAMESPACE_LABEL}={names.INJECTION_NAMESPACE_VALUE})"
        )
    bindings = requested_bindings(str(annotations[names.INJECT_ANNOTATION]))
    if isinstance(bindings, Refusal):
        return bindings
    options = _options(annotations)
    if isinstance(options, Refusal):
        return options
    refresh_seconds, file_mode = options

    spec = pod.get("spec") or {}
    volumes = copy.deepcopy(list(spec.get("volumes") or []))
    init_containers = copy.deepcopy(list(spec.get("initContainers") or []))
    containers = copy.deepcopy(list(spec.get("containers") or []))
    if any(c.get("name") == FETCH_CONTAINER for c in init_containers):
        return Skip()
    conflict = _conflict(volumes, init_containers, containers)
    if conflict is not None:
        return conflict

    volumes += [
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": names.TOKEN_AUDIENCE,
                            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                            "path": workload.TOKEN_PATH.rsplit("/", 1)[1],
                        }
                    }
                ]
            },
        },
        {"name": VALUES_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": VALUES_SIZE_LIMIT}},
    ]
    user = _run_as(spec, containers)
    fetch_args = [arg for binding in bindings for arg in ("--binding", binding)] + ["--dir", VALUES_DIR]
    if file_mode != FILE_MODES[0]:
        fetch_args += ["--mode", file_mode]
    ours = [_client_container(FETCH_CONTAINER, ["credbridge", "fetch", *fetch_args], settings, user)]
    if refresh_seconds is not None:
        sidecar = _client_container(
            REFRESH_CONTAINER,
            ["credbridge", "fetch", *fetch_args, "--watch", "--interval", str(refresh_seconds)],
            settings,
            user,
        )
        sidecar["restartPolicy"] = "Always"
        ours.append(sidecar)
    values_mount = {"name": VALUES_VOLUME, "mountPath": VALUES_DIR, "readOnly": True}
    for container in [*init_containers, *containers]:
        container["volumeMounts"] = [*(container.get("volumeMounts") or []), dict(values_mount)]
    return Injection(volumes=volumes, init_containers=ours + init_containers, containers=containers)


def _options(annotations: collections.abc.Mapping[str, typing.Any]) -> tuple[int | None, str] | Refusal:
    refresh: int | None = None
    raw_refresh = annotations.get(REFRESH_ANNOTATION)
    if raw_refresh is not None:
        text = str(raw_refresh).strip().removesuffix("s")
        if not text.isdigit() or int(text) < MIN_REFRESH_SECONDS:
            return Refusal(
                f"annotation {REFRESH_ANNOTATION} must be a whole number of seconds, at least {MIN_REFRESH_SECONDS} "
                '(e.g. "60"), or be removed to read the values only at start'
            )
        refresh = int(text)
    mode = str(annotations.get(FILE_MODE_ANNOTATION, FILE_MODES[0])).strip()
    if mode not in FILE_MODES:
        return Refusal(f"annotation {FILE_MODE_ANNOTATION} must be one of {', '.join(FILE_MODES)}")
    return refresh, mode


def _conflict(volumes: list[Json], init_containers: list[Json], containers: list[Json]) -> Refusal | None:
    taken_volumes = {str(v.get("name")) for v in volumes} & {TOKEN_VOLUME, VALUES_VOLUME}
    if taken_volumes:
        return Refusal(
            f"the Pod already has a volume named {sorted(taken_volumes)[0]}, which injection "
            f"({names.INJECT_ANNOTATION}) needs: rename that volume"
        )
    if any(c.get("name") == REFRESH_CONTAINER for c in [*init_containers, *containers]):
        return Refusal(f"the Pod already has a container named {REFRESH_CONTAINER}, which injection needs: rename it")
    for container in [*init_containers, *containers]:
        if any(m.get("mountPath") == VALUES_DIR for m in container.get("volumeMounts") or []):
            return Refusal(
                f"container {container.get('name')} already mounts something at {VALUES_DIR}, where injection "
                "mounts the values: move that mount"
            )
    return None


def _run_as(spec: collections.abc.Mapping[str, typing.Any], containers: list[Json]) -> tuple[int, int | None] | None:
    """The user (and group) the files should belong to: the Pod's, else the first container's that sets one.

    None when the Pod sets none at Pod level either way (the container inherits the Pod's
    security context, or runs as the image's user).
    """
    pod_context = spec.get("securityContext") or {}
    if pod_context.get("runAsUser") is not None:
        return None
    for container in containers:
        context = container.get("securityContext") or {}
        if context.get("runAsUser") is not None:
            group = context.get("runAsGroup")
            return int(context["runAsUser"]), int(group) if group is not None else None
    return None


def _client_container(
    name: str, command: list[str], settings: InjectionSettings, user: tuple[int, int | None] | None
) -> Json:
    env: list[Json] = [
        {"name": workload.ENDPOINT_ENV, "value": settings.endpoint_url},
        {"name": workload.TOKEN_ENV, "value": workload.TOKEN_PATH},
        {"name": workload.NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if settings.ca_pem:
        env.append({"name": workload.CA_DATA_ENV, "value": settings.ca_pem})
    security: Json = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    if user is not None:
        security["runAsUser"] = user[0]
        if user[1] is not None:
            security["runAsGroup"] = user[1]
        if user[0] == 0:
            security["runAsNonRoot"] = False
    return {
        "name": name,
        "image": settings.image,
        "imagePullPolicy": settings.pull_policy,
        "command": command,
        "env": env,
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": VALUES_VOLUME, "mountPath": VALUES_DIR},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": security,
    }
