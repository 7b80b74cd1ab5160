# The gateway: FastAPI + uvicorn on port 8000 (`python -m gateway`). Only the `gateway`
# extra is installed; the gateway never runs models.
#
#   docker build -f docker/gateway.Dockerfile -t ssdstack-gateway:0.1.0 .
#
# BASE_IMAGE is any image with Python 3.11 as `python` (PYTHON names another command).
# Dependencies are installed before the code is copied, so a code edit rebuilds only the
# last layers. pip, setuptools and the libraries' own test suites are left out of the
# runtime venv (the image's added-size goal is 150 MB).
# podman: build with `--format docker`, or the HEALTHCHECK is dropped.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
USER root
ARG PYTHON=python
ARG VENV_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN ${PYTHON} -m venv ${VENV_OPTIONS} /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pyproject finds packages by name (ssdstack*, trainer*, ...): empty ones are enough to
# resolve and install the dependencies from pyproject.toml alone.
COPY pyproject.toml README.md ./
RUN for package in ssdstack trainer converter inferencer gateway cli; do \
        mkdir -p "$package" && touch "$package/__init__.py"; \
    done \
 && pip install --no-cache-dir '.[gateway]'
COPY ssdstack ssdstack
COPY trainer trainer
COPY converter converter
COPY inferencer inferencer
COPY gateway gateway
COPY cli cli
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
 && python -c "import importlib.util as u, sys; missing = [m for m in sys.argv[1:] if u.find_spec(m) is None]; sys.exit(f'missing modules: {missing}' if missing else 0)" \
        fastapi uvicorn multipart celery redis gateway.main ssdstack.healthcheck \
 && pip uninstall --yes --quiet pip setuptools \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
USER root
ARG BASE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ssdstack-gateway" \
      org.opencontainers.image.description="SSD Stack REST gateway (FastAPI): API keys, jobs, models, detect" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
RUN (getent group 10001 >/dev/null || groupadd --system --gid 10001 ssdstack) \
 && (getent passwd 10001 >/dev/null || useradd --system --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin ssdstack) \
 && mkdir -p /data/store \
 && chown 10001:10001 /data/store
COPY --from=builder /opt/venv /opt/venv
COPY scripts /app/scripts
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SSDSTACK_HOST=0.0.0.0 \
    SSDSTACK_STORE_DIR=/data/store \
    SSDSTACK_WORK_DIR=/tmp/ssdstack-work
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -m ssdstack.healthcheck http "http://127.0.0.1:${SSDSTACK_PORT:-8000}/healthz"
ENTRYPOINT ["/app/scripts/entrypoint.sh"]
CMD ["python", "-m", "gateway"]
