# syntax=docker/dockerfile:1
# Govrix Scout: one image for every role (docs/deploy.md).
#
#   docker build -t govrix-scout .
#   docker run … govrix-scout migrate     apply sql/ to GOVRIX_DATABASE_URL, then exit
#   docker run … govrix-scout api         the API on :4001   (needs GOVRIX_API_KEY)
#   docker run … govrix-scout proxy       the proxy on :4000 (needs GOVRIX_IDENTITY_SECRET)
#
# The roles run the command lines `scripts/govrix up` runs (scripts/container.py), against the
# external PostgreSQL in GOVRIX_DATABASE_URL. Not built on the machine this was written on (it
# has no Docker daemon); the install command and the entry point were run there outside Docker.

ARG PYTHON_IMAGE=python:3.12-slim

# -- build: the locked runtime dependencies, nothing of the dev or bench groups ----------------
FROM ${PYTHON_IMAGE} AS build
# The uv that scripts/govrix installs (with pip, as it does) and that wrote uv.lock.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore "uv==${UV_VERSION}"
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /app
COPY pyproject.toml uv.lock ./
# --frozen: exactly uv.lock, never re-resolved. --no-default-groups: without `dev` and `bench`
# (`--no-dev` alone would keep `bench`). --no-install-project: the code runs from /app below.
RUN uv sync --frozen --no-default-groups --no-install-project --python /usr/local/bin/python3.12

# -- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# A fixed, numeric, unprivileged user: Kubernetes' runAsNonRoot can check it, and volume
# ownership (fsGroup, compose's named volumes) matches across hosts.
RUN groupadd --system --gid 10001 govrix \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/govrix --no-create-home \
        --shell /usr/sbin/nologin govrix \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/govrix /var/lib/govrix/mitmproxy
COPY --from=build /app/.venv /app/.venv
COPY addon /app/addon
COPY api /app/api
COPY scripts /app/scripts
COPY sql /app/sql
RUN python -m compileall -q /app/addon /app/api /app/scripts
WORKDIR /app
# GOVRIX_HOME holds the spool (spool/, spool-N/), the proxy pid files and the CA store
# (mitmproxy/, mitmproxy's confdir, as `up` passes it). Listen on every interface: the
# container's network is the boundary (publish ports deliberately; see compose.yaml).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GOVRIX_HOME=/var/lib/govrix \
    GOVRIX_PROXY_HOST=0.0.0.0 \
    GOVRIX_API_HOST=0.0.0.0
USER 10001:10001
# The spool (events waiting for PostgreSQL) and the CA: both must outlive the container.
VOLUME ["/var/lib/govrix", "/var/lib/govrix/mitmproxy"]
# proxy, API. The proxy's metrics (4002) listen on 127.0.0.1 only (addon/metrics.py).
EXPOSE 4000 4001
# The role this container started (api or proxy) answers: /health, or the proxy's workers run
# and its port accepts connections.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "scripts.container", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "scripts.container"]
CMD ["proxy"]
