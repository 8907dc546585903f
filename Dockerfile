# credbridge operator image: the `credbridge` command (operator and client) as a non-root user.
#
#   make image                                    # buildah (or docker), cached; see docs/image.md
#   docker build -t ghcr.io/credbridge/credbridge:0.1.0 .
#   buildah bud --build-arg BASE_IMAGE=localhost/credbridge-base:bookworm-... -t credbridge .
#
# BASE_IMAGE is any Debian-like image with python3 >= 3.11 and its venv module: the public slim Python
# image by default, or the Debian base `make image` makes with debootstrap where no registry answers.
#
# Three stages. `deps` makes the operator's virtualenv, /opt/credbridge, with the dependencies only,
# installed by a separate tools environment, so the virtualenv never holds pip. `app` adds the
# credbridge package to it. The runtime stage copies the two apart: the dependencies' layer stays
# the same until pyproject.toml changes, and a code change makes a new layer of about a megabyte
# (to build, to push and to pull). No pip, pip cache, wheel or build tool reaches the runtime image.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim

FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/tools && python3 -m venv --without-pip /opt/credbridge
COPY pyproject.toml /src/
# The build backend into the tools, the dependencies into the operator's environment. The kubernetes
# package's asyncio copy of its generated client (kubernetes/aio, over half of its size) goes:
# credbridge.kube uses the synchronous client, kopf its own.
# Behind a TLS-inspecting proxy, pass its CA bundle as the build secret `ca-certificates` (make image
# does: `--secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt`); a secret is mounted
# for this step only and never stored in the image.
RUN --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates.crt \
    if [ -s /run/secrets/ca-certificates.crt ]; then export PIP_CERT=/run/secrets/ca-certificates.crt; fi \
 && python3 -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb")); \
      open("/tmp/build.txt", "w").write("\n".join(p["build-system"]["requires"])); \
      open("/tmp/runtime.txt", "w").write("\n".join(p["project"]["dependencies"]))' \
 && /opt/tools/bin/pip install --requirement /tmp/build.txt \
 && /opt/tools/bin/pip --python /opt/credbridge/bin/python install --requirement /tmp/runtime.txt \
 && rm -rf /opt/credbridge/lib/python3*/site-packages/kubernetes/aio /tmp/build.txt /tmp/runtime.txt

FROM deps AS app
COPY README.md /src/
COPY src /src/src
# Offline: the build backend is installed above. The package's files are gathered under /app, at
# the paths they have in the image. Compiled bytecode is kept: the root filesystem is read-only at
# run time, so Python could not cache it.
RUN /opt/tools/bin/pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /tmp/wheels /src \
 && /opt/tools/bin/pip --python /opt/credbridge/bin/python install --no-deps --no-index /tmp/wheels/credbridge-*.whl \
 && mkdir /app \
 && cd / && tar -c opt/credbridge/bin/credbridge opt/credbridge/lib/python3*/site-packages/credbridge* | tar -x -C /app

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="credbridge" \
      org.opencontainers.image.description="Kubernetes operator for typed, validated, encrypted credentials" \
      org.opencontainers.image.source="https://github.com/credbridge/credbridge" \
      org.opencontainers.image.licenses="Apache-2.0"
# A passwd entry, so tools that look the user up by id (ps, Python's getpass) find a name.
RUN groupadd --gid 65532 credbridge \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin credbridge
COPY --from=deps /opt/credbridge /opt/credbridge
COPY --from=app /app/ /
ENV PATH=/opt/credbridge/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /
# health (/healthz), metrics (/metrics), admission webhook
EXPOSE 8080 9090 9443
# Exec form: no shell between the runtime and the program. The chart passes `run` and its flags as
# args; init containers pass the client commands (`env`, `fetch`).
ENTRYPOINT ["credbridge"]
CMD ["run"]
