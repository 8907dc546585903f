"""Integrity under faults: crashes of the operator, the API server and etcd, keyring accidents, and
the largest Credentials the limits allow.

Every scenario ends with the promise behind `Ready`, checked as a user would: every Credential is
Ready for its current generation, has exactly one managed Secret, the Secret opens with the
keyring in force and holds the values that went in, and the operator wrote nothing to objects the
fault did not change (audit log). Each prints how long it took to converge and the writes it
cost; run one with e.g. `.venv/bin/python -m pytest tests/integration/test_faults.py -k apiserver -v`.

Killing the API server or etcd disturbs every client of the control plane, so this module runs on
a control plane of its own (and its own operator), started once for the module.
"""

from __future__ import annotations

import base64
import collections
import copy
import pathlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import urllib3
from kubernetes import client

from credbridge.core import envelope, keyring, names, validation
from credbridge.kube import connecting, keyrings
from credbridge.local import controlplane, operator
from credbridge.testing import objects
from credbridge.testing.fixtures import AuditLog, Namespaces, kubectl_run

pytestmark = pytest.mark.cluster

OPERATOR_USER = "credbridge-operator"
OPERATOR_NAMESPACE = "credbridge-system"
KEYRING = names.DEFAULT_KEYRING_SECRET
LARGE_TYPE = "faultEightSecrets"
CONVERGE_TIMEOUT = 120.0
REFUSED_LINE = "refused a change of the keyring"

Values = dict[str, dict[str, str]]
"""Credential name -> the field values that went in."""


# ---- a control plane and an operator of this module's own ----------------------------------


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    if controlplane.use_existing_cluster():
        pytest.skip("the fault tests kill and restart etcd and kube-apiserver: they need the local control plane")
    started = controlplane.start(tmp_path_factory.mktemp("faults-controlplane"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def api(plane: controlplane.ControlPlane) -> client.ApiClient:
    core = client.CoreV1Api(connecting.api_client(str(plane.kubeconfig)))
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE)))
    return connecting.api_client(str(plane.kubeconfig))


class Operator:
    """The module's operator: started, killed with SIGKILL and started again like a crashing Pod."""

    def __init__(self, plane: controlplane.ControlPlane, workdir: pathlib.Path) -> None:
        self.kubeconfig = plane.user_kubeconfig(OPERATOR_USER, groups=["system:masters"])
        self.workdir = workdir
        self.generation = 0
        self.process = self.start()

    def start(self, wait_ready: bool = True) -> operator.OperatorProcess:
        self.generation += 1
        self.process = operator.start(
            self.kubeconfig,
            self.workdir / f"operator-{self.generation}.log",
            # The writes counted here are the reconciler's; verification's are counted in test_verification.py.
            args=["--operator-namespace", OPERATOR_NAMESPACE, "--reencrypt-rate", "50", "--no-verification"],
            wait_ready=wait_ready,
        )
        return self.process

    def kill(self) -> None:
        self.process.popen.kill()
        self.process.popen.wait(30)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.workdir.glob("operator-*.log")))

    def gauge(self, name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", self.process.metrics(), re.MULTILINE)
        assert match, f"the operator exposes no {name}"
        return float(match.group(1))


@pytest.fixture(scope="module")
def op(
    plane: controlplane.ControlPlane, api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    handle = Operator(plane, tmp_path_factory.mktemp("faults-operator"))
    yield handle
    handle.process.stop()


@pytest.fixture
def running(op: Operator) -> Operator:
    """The operator, started again if a test left it stopped."""
    if not op.process.alive():
        op.start()
    return op


@pytest.fixture
def audit(plane: controlplane.ControlPlane) -> AuditLog:
    return AuditLog(plane.audit_log)


@pytest.fixture
def namespaces(api: client.ApiClient) -> Iterator[Namespaces]:
    """Fresh namespaces, deleted after the test — and gone before the next fault, which could
    otherwise catch kube-controller-manager in the middle of deleting them."""
    made = Namespaces(api)
    yield made
    made.delete_all()
    core = client.CoreV1Api(api)

    def gone() -> bool:
        listed = {namespace.metadata.name for namespace in core.list_namespace().items}
        return not listed & set(made.created)

    deadline = time.monotonic() + 90
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.fixture(scope="module")
def measured(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Lines "fault: converged in X s, writes ..." printed after the module, for the record."""
    lines: list[str] = []
    yield lines
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not lines:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def record(
    measured: list[str], fault: str, seconds: float, writes: Mapping[str, int], outage: float | None = None
) -> None:
    """One line: how long the fault lasted (when it is one), how long convergence took after it, the writes."""
    counted = ", ".join(f"{count} {kind}" for kind, count in sorted(writes.items())) or "none"
    timing = (
        f"faulty {outage:.1f} s, converged {seconds:.1f} s after recovery"
        if outage is not None
        else (f"converged {seconds:.1f} s after the change")
    )
    measured.append(f"{fault}: {timing}; operator writes: {counted}")


# ---- what a user checks ---------------------------------------------------------------------


def literal_values(count: int, prefix: str) -> Values:
    return {
        f"{prefix}-{index}": {"openAIApiKey": f"sk-{prefix}-{index}-{secrets.token_hex(8)}"} for index in range(count)
    }


def create(api: client.ApiClient, namespace: str, values: Values, type_name: str = "openAIApi") -> None:
    """Create the Credentials, each tried again (like `kubectl apply` in CI) while the API server or the
    webhook cannot take it; one that exists already counts as created."""
    for name, fields in values.items():
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while True:
            try:
                objects.create_credential(api, namespace, objects.credential_body(name, type_name, fields))
                break
            except client.ApiException as error:
                if error.status == 409:
                    break
                if time.monotonic() > deadline:
                    raise
            except urllib3.exceptions.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)


def problems(api: client.ApiClient, namespace: str, expected: Values) -> list[str]:
    """Everything that keeps `namespace` from the promise; empty when it holds."""
    found: list[str] = []
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL
    )["items"]
    credentials = {item["metadata"]["name"]: item for item in listed}
    if set(credentials) != set(expected):
        found.append(f"Credentials {sorted(credentials)} != {sorted(expected)}")
    managed = client.CoreV1Api(api).list_namespaced_secret(
        namespace, label_selector=f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY_VALUE}"
    )
    owners = collections.Counter((secret.metadata.labels or {}).get(names.CREDENTIAL_LABEL) for secret in managed.items)
    if owners != collections.Counter(list(expected)):
        found.append(f"managed Secrets per Credential {dict(owners)} (expected exactly one each)")
    for name, fields in expected.items():
        credential = credentials.get(name)
        condition = objects.ready(credential)
        if credential is None or condition is None or condition.get("status") != "True":
            found.append(f"{name} is not Ready: {condition}")
            continue
        if credential["status"].get("observedGeneration") != credential["metadata"]["generation"]:
            found.append(f"{name} is Ready for an older generation")
            continue
        try:
            opened = objects.open_managed_secret(api, namespace, name, OPERATOR_NAMESPACE)
        except (envelope.EnvelopeError, keyring.KeyringError, AssertionError) as error:
            found.append(f"the Secret of {name} does not open: {type(error).__name__}")
            continue
        if any(opened.get(field) != value for field, value in fields.items()):
            found.append(f"the Secret of {name} opens to other values than went in")
    return found


def converge(api: client.ApiClient, namespace: str, expected: Values, timeout: float = CONVERGE_TIMEOUT) -> float:
    """Wait until the promise holds in `namespace`; return how long it took, fail with what is left."""
    started = time.monotonic()
    left = problems(api, namespace, expected)
    while left:
        if time.monotonic() - started > timeout:
            pytest.fail(f"not converged after {timeout:.0f}s: " + "; ".join(left[:10]))
        time.sleep(0.5)
        left = problems(api, namespace, expected)
    return time.monotonic() - started


def operator_writes(audit: AuditLog, since: int, namespace: str) -> list[dict[str, Any]]:
    return audit.writes(since=since, user=OPERATOR_USER, namespace=namespace)


def summary(writes: list[dict[str, Any]]) -> dict[str, int]:
    """Writes by kind: `secrets create`, `credentials/status patch`, ..."""
    kinds: collections.Counter[str] = collections.Counter()
    for event in writes:
        ref = event["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        kinds[f"{resource} {event['verb']}"] += 1
    return dict(kinds)


def touched(writes: list[dict[str, Any]], names_: Mapping[str, Any]) -> list[str]:
    """Writes to the Credentials in `names_` or their Secrets (a Secret is named after its Credential here)."""
    return [
        f"{event['verb']} {event['objectRef']['resource']}/{event['objectRef']['name']}"
        for event in writes
        if event["objectRef"].get("name") in names_ and event["objectRef"]["resource"] in ("secrets", "credentials")
    ]


def keyring_events(api: client.ApiClient, reason: str, seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Events with `reason` about the keyring Secret, except those named in `seen`."""
    return [
        event
        for event in objects.events_for(api, OPERATOR_NAMESPACE, KEYRING)
        if event.get("reason") == reason and event["metadata"]["name"] not in seen
    ]


def event_names(api: client.ApiClient) -> frozenset[str]:
    return frozenset(event["metadata"]["name"] for event in objects.events_for(api, OPERATOR_NAMESPACE, KEYRING))


def keyring_secret(api: client.ApiClient) -> client.V1Secret:
    return client.CoreV1Api(api).read_namespaced_secret(KEYRING, OPERATOR_NAMESPACE)


def restore_keyring(api: client.ApiClient, saved: client.V1Secret) -> None:
    """Put `saved` back as the keyring Secret (its data and annotations), whatever is there now."""
    core = client.CoreV1Api(api)
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=KEYRING, annotations=dict(saved.metadata.annotations or {}), labels=saved.metadata.labels
        ),
        data=dict(saved.data),
    )
    try:
        current = core.read_namespaced_secret(KEYRING, OPERATOR_NAMESPACE)
    except client.ApiException as error:
        if error.status != 404:
            raise
        core.create_namespaced_secret(OPERATOR_NAMESPACE, body)
        return
    body.metadata.resource_version = current.metadata.resource_version
    core.replace_namespaced_secret(KEYRING, OPERATOR_NAMESPACE, body)


def refusals_logged(op: Operator) -> int:
    return sum(1 for line in op.logs().splitlines() if REFUSED_LINE in line and " ERROR " in line)


def wait(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    return objects.wait_until(predicate, timeout, what)


def ready_bystanders(api: client.ApiClient, namespace: str, count: int = 5) -> Values:
    """Credentials that exist and are Ready before the fault, and that nobody changes during it."""
    values = literal_values(count, "bystander")
    create(api, namespace, values)
    converge(api, namespace, values)
    return values


# ---- crashes --------------------------------------------------------------------------------


def test_operator_killed_during_a_burst_of_creates(
    api: client.ApiClient, running: Operator, namespaces: Namespaces, audit: AuditLog, measured: list[str]
) -> None:
    namespace = namespaces.create("burst")
    bystanders = ready_bystanders(api, namespace)
    burst = literal_values(40, "burst")
    mark = audit.mark()

    creator = threading.Thread(target=create, args=(api, namespace, burst))
    creator.start()
    wait(lambda: len(problems(api, namespace, {**bystanders, **burst})) <= 30, "a third of the burst")
    fault_at = time.monotonic()
    running.kill()
    time.sleep(2)  # creates are refused meanwhile: the webhook is down with the operator
    running.start()
    recovered = time.monotonic()
    creator.join(CONVERGE_TIMEOUT)
    converge(api, namespace, {**bystanders, **burst})
    seconds = time.monotonic() - recovered

    writes = operator_writes(audit, mark, namespace)
    assert touched(writes, bystanders) == []
    kinds = summary(writes)
    # One Secret each, never rewritten; a status patch each (two for those caught mid-way).
    assert kinds.get("secrets create") == len(burst)
    assert "secrets update" not in kinds
    assert len(burst) <= kinds.get("credentials/status patch", 0) <= 2 * len(burst)
    record(measured, "operator kill -9 during 40 creates", seconds, kinds, outage=recovered - fault_at)


@pytest.mark.parametrize("process", ["kube-apiserver", "etcd"], ids=["apiserver", "etcd"])
def test_control_plane_process_killed_and_restarted(
    plane: controlplane.ControlPlane,
    api: client.ApiClient,
    running: Operator,
    namespaces: Namespaces,
    audit: AuditLog,
    measured: list[str],
    process: str,
) -> None:
    namespace = namespaces.create(process.replace("kube-", ""))
    bystanders = ready_bystanders(api, namespace)
    changed = next(iter(bystanders))
    mark = audit.mark()

    fault_at = time.monotonic()
    plane.process(process).kill()
    time.sleep(3)  # the operator's watches and requests fail meanwhile
    plane.process(process).restart()
    recovered = time.monotonic()
    wait(lambda: plane.kubectl("get", "--raw=/readyz", check=False).strip() == "ok", "the API server to be ready")

    new = literal_values(5, "after")
    create(api, namespace, new)
    bystanders[changed] = {"openAIApiKey": f"sk-changed-{secrets.token_hex(8)}"}
    objects.patch_credential(api, namespace, changed, {"spec": {"data": bystanders[changed]}})
    converge(api, namespace, {**bystanders, **new})
    seconds = time.monotonic() - recovered

    assert running.process.alive(), "the operator died with the control plane"
    writes = operator_writes(audit, mark, namespace)
    unchanged = {name: fields for name, fields in bystanders.items() if name != changed}
    assert touched(writes, unchanged) == []
    kinds = summary(writes)
    assert kinds.get("secrets create") == len(new)
    assert kinds.get("secrets update") == 1
    record(measured, f"{process} kill -9 and restart", seconds, kinds, outage=recovered - fault_at)


# ---- keyring accidents ----------------------------------------------------------------------


def swap_active_key(api: client.ApiClient, saved: client.V1Secret, *, fingerprints: str) -> str:
    """Replace the active key's bytes under the same id; `fingerprints`: keep, drop or rewrite."""
    broken = copy.deepcopy(saved)
    active = broken.metadata.annotations[names.ACTIVE_KEY_ANNOTATION]
    other = secrets.token_bytes(32)
    broken.data[active] = base64.b64encode(other).decode()
    if fingerprints == "drop":
        broken.metadata.annotations.pop(names.KEY_FINGERPRINTS_ANNOTATION, None)
    elif fingerprints == "rewrite":
        recorded = keyring.parse_fingerprints(KEYRING, broken.metadata.annotations)
        recorded[active] = keyring.key_fingerprint(active, other)
        broken.metadata.annotations[names.KEY_FINGERPRINTS_ANNOTATION] = keyring.fingerprints_annotation(
            keyring.Keyring({active: other}, active), recorded
        )
    restore_keyring(api, broken)
    return str(active)


def break_keyring(api: client.ApiClient, saved: client.V1Secret, fault: str) -> str:
    """Inflict `fault` on the keyring Secret; return a fragment the refusal must contain."""
    if fault == "deleted":
        client.CoreV1Api(api).delete_namespaced_secret(KEYRING, OPERATOR_NAMESPACE)
        return "was deleted"
    if fault == "active-key-missing":
        client.CoreV1Api(api).patch_namespaced_secret(
            KEYRING, OPERATOR_NAMESPACE, {"metadata": {"annotations": {names.ACTIVE_KEY_ANNOTATION: "deadbeef"}}}
        )
        return "'deadbeef'"
    fingerprints = "keep" if fault == "key-bytes-swapped" else "drop"
    return swap_active_key(api, saved, fingerprints=fingerprints)


@pytest.mark.parametrize(
    "fault", ["deleted", "active-key-missing", "key-bytes-swapped", "key-bytes-swapped-fingerprints-dropped"]
)
def test_keyring_fault_keeps_the_last_good_keyring_until_restored(
    api: client.ApiClient,
    running: Operator,
    namespaces: Namespaces,
    audit: AuditLog,
    measured: list[str],
    fault: str,
) -> None:
    namespace = namespaces.create("keyring")
    bystanders = ready_bystanders(api, namespace)
    saved = keyring_secret(api)
    refused_before = refusals_logged(running)
    seen = event_names(api)
    mark = audit.mark()

    fault_at = time.monotonic()
    fragment = break_keyring(api, saved, fault)
    try:
        wait(lambda: running.gauge("credbridge_keyring_rejected") == 1.0, "the keyring_rejected gauge")
        assert refusals_logged(running) == refused_before + 1
        [line] = [line for line in running.logs().splitlines() if REFUSED_LINE in line][refused_before:]
        assert fragment in line
        warnings = wait(lambda: keyring_events(api, "KeyringRejected", seen), "a Warning Event")
        assert len(warnings) == 1
        assert warnings[0]["type"] == "Warning" and fragment in warnings[0]["message"]
        assert saved.data[saved.metadata.annotations[names.ACTIVE_KEY_ANNOTATION]] not in str(warnings[0])

        # Meanwhile the operator seals with the last good keyring, and touches nothing it need not.
        during = literal_values(2, "during")
        create(api, namespace, during)
        for name in bystanders:
            objects.patch_credential(api, namespace, name, {"metadata": {"annotations": {"fault": fault}}})
        wait(lambda: all(objects.ready(objects.get_credential(api, namespace, name)) for name in during), "Ready")
        if fault == "key-bytes-swapped":
            # With its fingerprint recorded, `credbridge keys rotate` notices too (without it, only
            # the running operator can: it remembers the bytes).
            with pytest.raises(keyring.KeyringError, match="immutable"):
                keyrings.rotate(api, OPERATOR_NAMESPACE, KEYRING, secrets.token_bytes)
    finally:
        restore_keyring(api, saved)
    recovered = time.monotonic()
    wait(lambda: running.gauge("credbridge_keyring_rejected") == 0.0, "the gauge to fall back to 0")
    converge(api, namespace, {**bystanders, **during})
    seconds = time.monotonic() - recovered

    assert refusals_logged(running) == refused_before + 1, "one ERROR line per refused change"
    writes = operator_writes(audit, mark, namespace)
    assert touched(writes, bystanders) == []
    kinds = summary(writes)
    assert kinds.get("secrets create") == len(during) and "secrets update" not in kinds
    keyring_writes = [
        event
        for event in operator_writes(audit, mark, OPERATOR_NAMESPACE)
        if event["objectRef"]["resource"] == "secrets"
    ]
    assert keyring_writes == [], "the restored keyring carries its fingerprints: nothing to record"
    assert keyring_secret(api).data == saved.data
    record(measured, f"keyring {fault}, then restored", seconds, kinds, outage=recovered - fault_at)


def test_swapped_key_bytes_stop_a_restarting_operator_until_restored(
    api: client.ApiClient, running: Operator, namespaces: Namespaces, audit: AuditLog, measured: list[str]
) -> None:
    namespace = namespaces.create("restart")
    bystanders = ready_bystanders(api, namespace)
    saved = keyring_secret(api)
    running.process.stop()
    mark = audit.mark()
    seen = event_names(api)
    fault_at = time.monotonic()
    key_id = swap_active_key(api, saved, fingerprints="keep")
    try:
        refused = running.start(wait_ready=False)
        assert refused.popen.wait(60) == 2
        assert "refusing to start" in refused.logs() and key_id in refused.logs() and "immutable" in refused.logs()
        wait(lambda: keyring_events(api, "KeyringRejected", seen), "a Warning Event on the keyring Secret")
    finally:
        restore_keyring(api, saved)
    running.start()
    recovered = time.monotonic()
    converge(api, namespace, bystanders)
    seconds = time.monotonic() - recovered
    writes = operator_writes(audit, mark, namespace)
    assert touched(writes, bystanders) == []
    record(
        measured,
        "key bytes swapped across an operator restart, then restored",
        seconds,
        summary(writes),
        outage=recovered - fault_at,
    )


def test_a_wrong_keyring_restored_whole_while_the_operator_is_down_is_repaired_on_start(
    api: client.ApiClient, running: Operator, namespaces: Namespaces, audit: AuditLog, measured: list[str]
) -> None:
    # Bytes and fingerprints replaced together (a backup of another keyring restored whole): nothing
    # can tell, so the operator adopts it. `Ready` stays honest because a starting operator opens
    # every Secret and seals again, from the sources, what does not open.
    namespace = namespaces.create("wrong-backup")
    bystanders = ready_bystanders(api, namespace)
    saved = keyring_secret(api)
    running.process.stop()
    mark = audit.mark()
    fault_at = time.monotonic()
    swap_active_key(api, saved, fingerprints="rewrite")
    try:
        running.start()
        converge(api, namespace, bystanders)
    finally:
        running.process.stop()
        restore_keyring(api, saved)
        running.start()
    recovered = time.monotonic()
    converge(api, namespace, bystanders)
    seconds = time.monotonic() - recovered
    kinds = summary(operator_writes(audit, mark, namespace))
    # Sealed again under the wrong key, then under the right one: two writes per Secret, no more.
    assert kinds.get("secrets update") == 2 * len(bystanders)
    record(
        measured,
        "wrong keyring restored whole across a restart, then the right one",
        seconds,
        kinds,
        outage=recovered - fault_at,
    )


# ---- the largest Credentials ----------------------------------------------------------------


@pytest.fixture(scope="module")
def large_type(api: client.ApiClient) -> str:
    """A CredentialType with eight password fields p0..p7."""
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_TYPE_KIND,
        "metadata": {"name": LARGE_TYPE.lower(), "labels": objects.TEST_LABEL},
        "spec": {
            "name": LARGE_TYPE,
            "label": "Eight secrets",
            "version": 1,
            "inputs": [{"name": f"p{index}", "label": f"P{index}", "type": "password"} for index in range(8)],
        },
    }
    client.CustomObjectsApi(api).create_cluster_custom_object(names.GROUP, names.VERSION, "credentialtypes", body)
    return LARGE_TYPE


def eight_values(total: int) -> dict[str, str]:
    """p0..p7 whose sealed plaintext is exactly `total` bytes."""
    framing = len(envelope.encode_plaintext({f"p{index}": "" for index in range(8)}))
    payload = total - framing
    return {
        f"p{index}": secrets.token_hex(payload)[: payload // 8 + (1 if index < payload % 8 else 0)]
        for index in range(8)
    }


def share(api: client.ApiClient, namespaces: Namespaces, source_namespace: str, name: str) -> str:
    target = namespaces.create("mirror", annotations={names.ACCEPT_SHARES_ANNOTATION: source_namespace})
    objects.create_share(api, source_namespace, objects.share_body(f"{name}-share", name, [target]))
    return target


def test_update_of_a_320_kib_credential_reaches_its_secret_and_its_mirror(
    api: client.ApiClient,
    running: Operator,
    namespaces: Namespaces,
    audit: AuditLog,
    measured: list[str],
    large_type: str,
) -> None:
    namespace = namespaces.create("large")
    values = {f"p{index}": secrets.token_hex(20 * 1024) for index in range(8)}  # 8 x 40 KiB
    objects.create_secret(api, namespace, "large-source", values)
    objects.create_credential(
        api,
        namespace,
        objects.credential_body("large", large_type, value_from={field: ("large-source", field) for field in values}),
    )
    converge(api, namespace, {"large": values})
    target = share(api, namespaces, namespace, "large")
    mirror = names.mirror_name(namespace, "large")
    converge(api, target, {mirror: values})
    mark = audit.mark()

    # One value changes, through a change of the spec (so the generation moves too).
    values["p3"] = secrets.token_hex(20 * 1024)
    client.CoreV1Api(api).patch_namespaced_secret("large-source", namespace, {"stringData": {"p3-new": values["p3"]}})
    objects.patch_credential(
        api,
        namespace,
        "large",
        {"spec": {"valueFrom": {"p3": {"secretKeyRef": {"name": "large-source", "key": "p3-new"}}}}},
    )
    started = time.monotonic()
    converge(api, namespace, {"large": values})
    converge(api, target, {mirror: values})
    seconds = time.monotonic() - started

    kinds = summary(operator_writes(audit, mark, namespace))
    assert kinds.get("secrets update") == 1
    mirror_kinds = summary(operator_writes(audit, mark, target))
    assert mirror_kinds.get("secrets update") == 1, "the mirror Secret's update passed the webhook"
    # No write was refused and retried (the webhook used to answer these updates with HTTP 413).
    assert "Entity Too Large" not in running.logs()
    assert [line for line in running.logs().splitlines() if "retrying" in line and namespace in line] == []
    record(
        measured,
        "update of a 320 KiB Credential (and its mirror)",
        seconds,
        {**kinds, **{f"mirror {k}": v for k, v in mirror_kinds.items()}},
    )


def test_the_limit_is_the_same_for_the_webhook_and_the_reconciler_and_never_an_opaque_413(
    plane: controlplane.ControlPlane,
    api: client.ApiClient,
    running: Operator,
    namespace_for_limits: str,
    large_type: str,
) -> None:
    namespace = namespace_for_limits
    # 8 x 65,500 bytes of literals: within the limit, and annotating it sends ~2 MiB to the webhook.
    within = {f"p{index}": "w" * 65_500 for index in range(8)}
    create(api, namespace, {"within": within}, large_type)
    converge(api, namespace, {"within": within})
    annotated = kubectl_run(plane, "annotate", "credential", "within", "-n", namespace, "touched=yes")
    assert annotated.returncode == 0, annotated.stderr

    # 8 x 65,536: each value at its limit, together one JSON framing over: refused with the one message.
    over = {f"p{index}": "o" * validation.MAX_VALUE_BYTES for index in range(8)}
    with pytest.raises(client.ApiException) as refused:
        objects.create_credential(api, namespace, objects.credential_body("over", large_type, over))
    assert refused.value.status == 403
    assert f"exceed the limit of {validation.MAX_PLAINTEXT_BYTES} bytes" in str(refused.value.body)
    # The user's mistake is logged at INFO, not as kopf's ERROR "failed permanently".
    refusal = wait(
        lambda: [
            line for line in running.logs().splitlines() if f"refused CREATE of Credential {namespace}/over" in line
        ],
        "the refusal in the operator log",
    )
    assert " INFO " in refusal[0]
    assert "failed permanently" not in running.logs()
    # The operator's own identity skips the webhook's checks: the reconciler refuses it the same way.
    as_operator = connecting.api_client(str(running.kubeconfig))
    objects.create_credential(as_operator, namespace, objects.credential_body("over", large_type, over))
    credential = objects.wait_for_reason(api, namespace, "over", "ValidationFailed")
    condition = objects.ready(credential)
    assert condition is not None
    assert f"exceed the limit of {validation.MAX_PLAINTEXT_BYTES} bytes" in condition["message"]
    assert "Entity Too Large" not in str(refused.value.body)


@pytest.fixture
def namespace_for_limits(namespaces: Namespaces) -> str:
    return namespaces.create("limits")


def test_rotation_completes_for_a_maximum_size_credential(
    api: client.ApiClient,
    running: Operator,
    namespaces: Namespaces,
    audit: AuditLog,
    measured: list[str],
    large_type: str,
) -> None:
    namespace = namespaces.create("rotate")
    largest = eight_values(validation.MAX_PLAINTEXT_BYTES)
    create(api, namespace, {"largest": largest}, large_type)
    converge(api, namespace, {"largest": largest})
    target = share(api, namespaces, namespace, "largest")
    mirror = names.mirror_name(namespace, "largest")
    converge(api, target, {mirror: largest})
    before = keyrings.load(api, OPERATOR_NAMESPACE, KEYRING)
    assert before is not None
    mark = audit.mark()

    rotated = keyrings.rotate(api, OPERATOR_NAMESPACE, KEYRING, secrets.token_bytes)
    started = time.monotonic()

    def on_new_key(where: str, name: str) -> bool:
        credential = objects.get_credential(api, where, name) or {}
        return bool((credential.get("status") or {}).get("keyId") == rotated.active_id)

    wait(lambda: on_new_key(namespace, "largest") and on_new_key(target, mirror), "both to move to the new key")
    converge(api, namespace, {"largest": largest})
    converge(api, target, {mirror: largest})
    seconds = time.monotonic() - started

    def on_old_key() -> list[str]:
        listed = client.CustomObjectsApi(api).list_cluster_custom_object(
            names.GROUP, names.VERSION, names.CREDENTIAL_PLURAL
        )["items"]
        return [
            f"{item['metadata']['namespace']}/{item['metadata']['name']} ({(objects.ready(item) or {}).get('reason')})"
            for item in listed
            if (item.get("status") or {}).get("keyId") == before[0].active_id
            and not item["metadata"].get("deletionTimestamp")  # going away with its Secret
        ]

    # Earlier tests' Credentials move too before the old key can go.
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while left := on_old_key():
        assert time.monotonic() < deadline, f"still on the old key: {left}"
        time.sleep(0.5)
    in_use = [rotated.active_id]
    retired = keyrings.retire(api, OPERATOR_NAMESPACE, KEYRING, before[0].active_id, in_use)
    assert retired.ids() == sorted(set(before[0].ids()) - {before[0].active_id} | {rotated.active_id})
    kinds = summary(operator_writes(audit, mark, namespace))
    assert kinds.get("secrets update") == 1
    mirror_kinds = summary(operator_writes(audit, mark, target))
    assert mirror_kinds.get("secrets update") == 1, "the mirror Secret's update passed the webhook"
    record(
        measured,
        "rotation with a 512 KiB Credential (and its mirror)",
        seconds,
        {**kinds, **{f"mirror {kind}": count for kind, count in mirror_kinds.items()}},
    )
