# The inferencer worker (Celery queue `infer`, thread pool of SSDSTACK_INFER_CONCURRENCY):
# serves the deployed version with ONNX Runtime, or with the MindX SDK on an NPU, and
# evaluates served models. Scale it with `docker compose up --scale inferencer=N`.
#
#   docker build -f docker/inferencer.Dockerfile -t ssdstack-inferencer:0.1.0 .
#
# CPU (default): BASE_IMAGE python:3.11-slim-bookworm.
# Ascend: BASE_IMAGE an ascendhub inference image with mxVision (infer-modelzoo);
# scripts/entrypoint.sh sources mxVision's set_env.sh, which puts StreamManagerApi on
# PYTHONPATH, and the driver libraries mounted from the host on LD_LIBRARY_PATH.
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
 && pip install --no-cache-dir '.[inferencer]'
COPY ssdstack ssdstack
COPY trainer trainer
COPY converter converter
COPY inferencer inferencer
COPY gateway gateway
COPY cli cli
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
 && python -c "import importlib.util as u, sys; missing = [m for m in sys.argv[1:] if u.find_spec(m) is None]; sys.exit(f'missing modules: {missing}' if missing else 0)" \
        onnxruntime matplotlib celery redis inferencer.worker ssdstack.healthcheck

FROM ${BASE_IMAGE} AS runtime
USER root
ARG BASE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ssdstack-inferencer" \
      org.opencontainers.image.description="SSD Stack inferencer worker: ONNX Runtime or MindX SDK detection and evaluation" \
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
# The thread count comes from SSDSTACK_INFER_CONCURRENCY (inferencer/worker.py sets it).
CMD ["celery", "-A", "inferencer.worker", "worker", "-Q", "infer", "--pool", "threads", "--hostname", "inferencer@%h", "--loglevel", "INFO"]
