"""Fixtures shared by the unit tests of the operator's consumers (no cluster)."""

from __future__ import annotations

import typing

import pytest

from credbridge.operator import controller
from credbridge.testing import offline


@pytest.fixture
def control() -> typing.Iterator[controller.Controller]:
    """A Controller whose API client reaches nothing (credbridge.testing.offline); its consumers are stopped after."""
    made = offline.offline_controller()
    yield made
    for each in made.consumers:
        each.stop()
