"""pytest fixtures for the services verification checks talk to: the vendor stand-in and real databases.

Like the cluster fixtures they never skip: if Redis or MariaDB are missing (`make databases`
installs them), the tests that need them fail saying so. Each server is started once per test
module that asks for it and stopped after it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from credbridge import tls
from credbridge.local import databases
from credbridge.local import flowise as local_flowise
from credbridge.testing import vendors


@pytest.fixture(scope="session")
def vendor_ca() -> tls.Issued:
    """The CA of the vendor stand-in's certificates (tests and the operator trust it explicitly)."""
    return tls.make_ca("credbridge-test-vendors")


@pytest.fixture(scope="module")
def standin(vendor_ca: tls.Issued) -> Iterator[vendors.VendorStandIn]:
    """The vendors' APIs on 127.0.0.1 (their hosts on its certificate)."""
    server = vendors.VendorStandIn(vendor_ca).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[databases.RedisServer]:
    server = databases.RedisServer.start(password=secrets.token_urlsafe(12), user_password=secrets.token_urlsafe(12))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mariadb_server() -> Iterator[databases.MariaDBServer]:
    server = databases.MariaDBServer.start(password=secrets.token_urlsafe(12))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[local_flowise.PostgresServer]:
    server = local_flowise.PostgresServer.start()
    yield server
    server.stop()
