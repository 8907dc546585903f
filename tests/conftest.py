"""Shared fixtures: the cluster ones live in credbridge.testing.fixtures so other projects can reuse them."""

pytest_plugins = [
    "credbridge.testing.fixtures",
    "credbridge.testing.flowise",
    "credbridge.testing.oauth2",
    "credbridge.testing.services",
]
