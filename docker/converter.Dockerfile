# The converter worker (Celery queue `convert`, solo pool): ONNX Runtime optimisation and
# the reference check everywhere; ATC (`.om`) where the CANN toolkit is in the image.
#
#   docker build -f docker/converter.Dockerfile -t ssdstack-converter:0.1.0 .
#
# CPU (default): BASE_IMAGE python:3.11-slim-bookworm.
# Ascend: BASE_IMAGE an ascendhub ascend-toolkit (CANN) image; scripts/entrypoint.sh
# sources its set_env.sh, which puts `atc` on PATH. ATC needs no NPU. Its operator
# compiler runs Python packages installed in the base image's Python, so
# docker-compose.ascend.yml builds the venv with VENV_OPTIONS=--system-site-packages.
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
 && pip install --no-cache-dir '.[converter]'
COPY ssdstack ssdstack
COPY trainer trainer
COPY converter converter
COPY inferencer inferencer
COPY gateway gateway
COPY cli cli
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
 && python -c "import importlib.util as u, sys; missing = [m for m in sys.argv[1:] if u.find_spec(m) is None]; sys.exit(f'missing modules: {missing}' if missing else 0)" \
        onnx onnxruntime celery redis converter.worker ssdstack.healthcheck

FROM ${BASE_IMAGE} AS runtime
USER root
ARG BASE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ssdstack-converter" \
      org.opencontainers.image.description="SSD Stack converter worker: ONNX Runtime optimisation and check, Ascend ATC" \
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
    SSDSTACK_STORE_DIR=/data/store \
    SSDSTACK_WORK_DIR=/tmp/ssdstack-work \
    SSDSTACK_HEARTBEAT_FILE=/tmp/ssdstack-heartbeat
# A writable working folder, also under a read-only root with an emptyDir or tmpfs at /tmp.
WORKDIR /tmp
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "ssdstack.healthcheck", "heartbeat"]
ENTRYPOINT ["/app/scripts/entrypoint.sh"]
CMD ["celery", "-A", "converter.worker", "worker", "-Q", "convert", "--pool", "solo", "--hostname", "converter@%h", "--loglevel", "INFO"]
