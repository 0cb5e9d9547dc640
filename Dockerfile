# syntax=docker/dockerfile:1

# --- build: a wheel and its dependencies in a virtual environment --------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN /opt/venv/bin/pip install .

# --- run: only the venv, as an unprivileged user -------------------------------------------
FROM python:3.11-slim-bookworm
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
# Secrets come from the environment: NUSASMS_API_KEY, TELEGRAM_BOT_TOKEN, BRIDGE_CALLBACK_SECRET.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["bridge"]
CMD ["run", "--config", "/etc/bridge/config.yaml"]
