"""Every consumer of Credentials the operator runs, registered in one place.

A consumer is built on `consumer.py`'s base. This registry is what the rest reads:
- the runner builds, wires and starts each enabled consumer (`start_all`);
- the handlers watch the kind each one owns, and the extra kinds it asks for (`register_handlers`);
- `OperatorSettings` holds one settings dataclass per consumer, under the registration's name, and
  `credbridge run` makes its flags from those dataclasses (cli/flags.py); the chart's values are
  checked against their defaults (tests/unit/test_chart.py).

Adding a consumer: its file on the base, its settings dataclass in settings.py (a field of
`OperatorSettings`), its `Registration` here, its CRD (if it owns a kind) in crds/, and its RBAC
in the chart. docs/development.md walks through it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from credbridge.core import names
from credbridge.core.flowise import target as flowise_target
from credbridge.operator import bindings, consumer, flowise, oauth2, verification
from credbridge.operator import settings as settings_module


@dataclasses.dataclass(frozen=True)
class Watch:
    """A kind a consumer hears of besides its own (Pods, for bindings' usage): `handler` gets (type, body)."""

    group: str
    version: str
    plural: str
    handler: Callable[[consumer.Consumer], Callable[[str | None, Mapping[str, Any]], None]]
    keep: Callable[[Mapping[str, Any]], dict[str, Any]]
    """The private copy of the body the handler gets (only what it needs)."""


@dataclasses.dataclass(frozen=True)
class Registration:
    """One consumer: its settings, the kind it owns, how it is built, and what else it watches."""

    name: str
    """Its settings' field in OperatorSettings."""
    plural: str | None
    """The credbridge.io kind it owns (watched and routed to `object_changed`), or None."""
    build: Callable[[consumer.Context], consumer.Consumer]
    enabled: Callable[[settings_module.OperatorSettings], bool] = lambda _: True
    watches: tuple[Watch, ...] = ()


def _pod_spec(body: Mapping[str, Any]) -> dict[str, Any]:
    """Which Secrets a Pod reads is all usage needs: its metadata and spec, never its status."""
    metadata = {key: value for key, value in (body.get("metadata") or {}).items() if key != "managedFields"}
    return {"metadata": copy.deepcopy(metadata), "spec": copy.deepcopy(dict(body.get("spec") or {}))}


def _pod_handler(built: consumer.Consumer) -> Callable[[str | None, Mapping[str, Any]], None]:
    assert isinstance(built, bindings.BindingController)
    return built.pod_changed


REGISTRY: tuple[Registration, ...] = (
    Registration(
        name="bindings",
        plural=names.CREDENTIAL_BINDING_PLURAL,
        build=lambda context: bindings.BindingController(
            context, context.settings.bindings, workers=context.settings.workers
        ),
        watches=(Watch("", "v1", "pods", _pod_handler, _pod_spec),),
    ),
    Registration(
        name="flowise",
        plural=flowise_target.PLURAL,
        build=lambda context: flowise.FlowiseSync(context, context.settings.flowise),
        enabled=lambda settings: settings.flowise.enabled,
    ),
    Registration(
        name="oauth2",
        plural=None,
        build=lambda context: oauth2.OAuth2Refresher(context, context.settings.oauth2),
        enabled=lambda settings: settings.oauth2.enabled,
    ),
    Registration(
        name="verification",
        plural=None,
        build=lambda context: verification.VerificationConsumer(context, context.settings.verification),
        enabled=lambda settings: settings.verification.enabled,
    ),
)


def start_all(controller: Any, kopf_registry: kopf.OperatorRegistry) -> dict[str, consumer.Consumer]:
    """Builds every enabled consumer, routes the controller's events to it, registers its handlers and
    starts it; returns them by name (the runner stops them through the controller)."""
    started: dict[str, consumer.Consumer] = {}
    context = controller.context()
    for registration in REGISTRY:
        if not registration.enabled(controller.settings):
            continue
        built = registration.build(context)
        controller.add_consumer(built)
        register_handlers(kopf_registry, registration, built)
        built.start()
        started[registration.name] = built
    return started


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A private copy of what the views keep (spec, status, metadata without managedFields)."""
    metadata = {key: value for key, value in (body.get("metadata") or {}).items() if key != "managedFields"}
    return copy.deepcopy({"metadata": metadata, **{key: body[key] for key in ("spec", "status") if key in body}})


def register_handlers(
    kopf_registry: kopf.OperatorRegistry, registration: Registration, built: consumer.Consumer
) -> None:
    """Registers kopf event handlers for the consumer's own kind and its extra watches (no I/O in them:
    they store, index and queue)."""
    if registration.plural is not None:
        assert isinstance(built, consumer.ObjectConsumer)
        owner = built

        @kopf.on.event(names.GROUP, names.VERSION, registration.plural, registry=kopf_registry)
        async def object_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            owner.object_changed(type, _plain(body))

    for watch in registration.watches:
        _register_watch(kopf_registry, watch, built)


def _register_watch(kopf_registry: kopf.OperatorRegistry, watch: Watch, built: consumer.Consumer) -> None:
    handler, keep = watch.handler(built), watch.keep

    @kopf.on.event(watch.group, watch.version, watch.plural, registry=kopf_registry)
    async def watched_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        handler(type, keep(body))
