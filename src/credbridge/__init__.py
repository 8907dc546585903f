"""credbridge: typed, validated, encrypted credentials for third-party services, Kubernetes-native."""

__version__ = "0.1.0"
