# credbridge operator image: `credbridge run` as a non-root user on a slim Python base.
# Build: docker build -t ghcr.io/credbridge/credbridge:0.1.0 .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Install into a separate prefix so the final stage gets the package and its dependencies only,
# without build leftovers.
RUN pip install --prefix=/install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="credbridge" \
      org.opencontainers.image.description="Kubernetes operator for typed, validated, encrypted credentials" \
      org.opencontainers.image.source="https://github.com/credbridge/credbridge" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN groupadd --gid 65532 credbridge \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin credbridge
COPY --from=build /install /usr/local
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# health (/healthz), metrics (/metrics), admission webhook
EXPOSE 8080 9090 9443
ENTRYPOINT ["credbridge", "run"]
