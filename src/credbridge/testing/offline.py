"""An operator Controller without a cluster, for unit tests of routing and consumers.

Its API client points at a port nothing listens on, so a test fails loudly if the code under
test talks to the API server where it should only look up its cache and queue.
"""

from __future__ import annotations

from kubernetes import client

from credbridge.core import keyring, registry
from credbridge.operator import controller
from credbridge.operator import settings as settings_module

RING = keyring.new_keyring(lambda count: b"\x01" * count)
"""The keyring of `offline_controller`'s Controller."""


def unreachable_api() -> client.ApiClient:
    """An API client for a port nothing listens on: routing must never use it."""
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    return client.ApiClient(configuration)


def offline_controller() -> controller.Controller:
    """A Controller with default settings, the built-in types and `RING`, reaching no API server."""
    return controller.Controller(
        unreachable_api(), settings_module.OperatorSettings(), RING, registry.Registry.builtin()
    )
