# The trainer worker: MindSpore training, export and publishing (Celery queue `train`,
# solo pool: MindSpore is never forked after import, one job at a time).
#
#   docker build -f docker/trainer.Dockerfile -t ssdstack-trainer:0.1.0 .
#
# CPU (default): BASE_IMAGE python:3.11-slim-bookworm and the `trainer` extra, which
# brings mindspore==2.8.0 from PyPI.
# Ascend: BASE_IMAGE an ascendhub ascend-mindspore image, whose MindSpore matches its
# CANN. It must not be replaced, so docker-compose.ascend.yml passes
#   TRAINER_EXTRA=trainer-ascend           (the trainer's extra without mindspore)
#   VENV_OPTIONS=--system-site-packages    (the venv sees the base image's MindSpore)
# The build fails if mindspore is not importable either way. A GPU image: a CUDA
# BASE_IMAGE and MINDSPORE_GPU_PLUGINS=keep.
# Give the container shared memory for MindSpore's data workers (compose: shm_size).
# podman: build with `--format docker`, or the HEALTHCHECK is dropped.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
USER root
ARG PYTHON=python
ARG VENV_OPTIONS=""
ARG TRAINER_EXTRA=trainer
# The mindspore wheel carries CUDA plugins (about 1.2 GB) that CPU and Ascend images never
# load; `keep` them only for a GPU image (a CUDA BASE_IMAGE).
ARG MINDSPORE_GPU_PLUGINS=drop
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
 && pip install --no-cache-dir ".[${TRAINER_EXTRA}]" \
 && if [ "$MINDSPORE_GPU_PLUGINS" = drop ]; then \
        rm -rf /opt/venv/lib/python*/site-packages/mindspore/lib/plugin/gpu* \
               /opt/venv/lib/python*/site-packages/mindspore/lib/plugin/libmindspore_gpu.so*; \
    fi
COPY ssdstack ssdstack
COPY trainer trainer
COPY converter converter
COPY inferencer inferencer
COPY gateway gateway
COPY cli cli
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
 && python -c "import importlib.util as u, sys; missing = [m for m in sys.argv[1:] if u.find_spec(m) is None]; sys.exit(f'missing modules: {missing}' if missing else 0)" \
        mindspore matplotlib psutil celery redis trainer.worker ssdstack.healthcheck

FROM ${BASE_IMAGE} AS runtime
USER root
ARG BASE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ssdstack-trainer" \
      org.opencontainers.image.description="SSD Stack trainer worker (MindSpore): train, import, export, publish" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# MindSpore's CPU kernels need the GNU OpenMP runtime, which slim images lack (the
# Ascend bases have it, and may have no apt-get).
RUN if ! ldconfig -p | grep -q 'libgomp\.so\.1'; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \
        && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi \
 && (getent group 10001 >/dev/null || groupadd --system --gid 10001 ssdstack) \
 && (getent passwd 10001 >/dev/null || useradd --system --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin ssdstack) \
 && mkdir -p /data/store \
 && chown 10001:10001 /data/store
COPY --from=builder /opt/venv /opt/venv
COPY scripts /app/scripts
# GLOG_v=3: MindSpore logs errors only (it logs every graph-compile warning otherwise).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GLOG_v=3 \
    SSDSTACK_STORE_DIR=/data/store \
    SSDSTACK_WORK_DIR=/tmp/ssdstack-work \
    SSDSTACK_HEARTBEAT_FILE=/tmp/ssdstack-heartbeat
# MindSpore writes rank_0/ and kernel_meta/ into the working folder: it must be writable,
# and /tmp stays so under a read-only root with an emptyDir or tmpfs there.
WORKDIR /tmp
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "ssdstack.healthcheck", "heartbeat"]
ENTRYPOINT ["/app/scripts/entrypoint.sh"]
CMD ["celery", "-A", "trainer.worker", "worker", "-Q", "train", "--pool", "solo", "--hostname", "trainer@%h", "--loglevel", "INFO"]
