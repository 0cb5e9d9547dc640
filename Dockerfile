# syntax=docker/dockerfile:1

# The base image is pinned by digest, so a rebuild starts from the same bytes. This digest
# is the one Renovate pinned for docker.io/library/python:3.11.10-slim-bookworm in the
# public repository nalabelle/build (images/digests.Dockerfile); it could not be resolved
# against Docker Hub from where this file was written. To refresh it (and take Debian's
# and CPython's security fixes), on a machine with Docker:
#   docker buildx imagetools inspect python:3.11-slim-bookworm     (prints "Digest: sha256:...")
#   docker run --rm python:3.11-slim-bookworm@sha256:<digest> python -V   (its patch version)
# and put both into PYTHON_IMAGE below; then rebuild and run the tests against the image.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# --- build: the locked dependencies and the package in a virtual environment --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
# Every runtime dependency (and setuptools, to build the package) at the version and with
# the hashes in requirements.lock: a changed or swapped file on the index fails the build.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY bridge ./bridge
# --no-deps: nothing beyond the lock file; --no-build-isolation: build with the locked
# setuptools instead of fetching an unpinned one. The builder is then not needed at run time.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/venv/bin/pip uninstall --yes setuptools

# --- run: only the venv, as an unprivileged user -------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --home-dir /data --shell /usr/sbin/nologin bridge \
    && mkdir -p /data /etc/bridge \
    && chown bridge:bridge /data
COPY --from=build /opt/venv /opt/venv
COPY config.example.yaml /etc/bridge/config.example.yaml
WORKDIR /data
USER 10001:10001
# The database (and served media) live here; mount a volume to keep them.
VOLUME ["/data"]
EXPOSE 8080
# Secrets come from the environment: NUSASMS_API_KEY, TELEGRAM_BOT_TOKEN, BRIDGE_CALLBACK_SECRET
# (and BRIDGE_ADMIN_TOKEN if set). 9090 (server.admin, /healthz and /metrics) is not exposed:
# it listens on the container's loopback, where this check runs.
# The check reads the same config as the bridge and asks /healthz where server.admin says
# (the admin listener, or server.port with server.admin_token), so a port changed in
# config.yaml needs no change here (nor curl in the image). Mounting the config elsewhere?
# Override the HEALTHCHECK's --config along with the CMD's.
# The command itself takes about 0.7 s to start (config validation); /healthz gets 5 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["bridge", "health", "--config", "/etc/bridge/config.yaml", "--timeout", "5"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["bridge"]
CMD ["run", "--config", "/etc/bridge/config.yaml"]
